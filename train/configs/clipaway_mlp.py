"""CLIPAway's MLP as published: `python train.py --config config/training_config.yaml` of the original
repository (numbers from CLIPAway:train.py, config/training_config.yaml, dataset/dataset.py and the README;
see shared/reference/clipaway-original.md section 2).

    clipaway-jax train --config train/configs/clipaway_mlp.py --workdir runs/mlp --export checkpoints/clipaway-mlp
"""

from clipaway_jax.training.config import base_config


def get_config():
    c = base_config()
    c.task = "mlp"  # AlphaCLIP(image, alpha = all-ones) -> the IP-Adapter ViT-H image_embeds, MSE (train.py)
    c.checkpoint = "checkpoints/clipaway"  # `clipaway-jax convert` output: AlphaCLIP + the ViT-H image encoder
    c.images = "coco/train2017"  # README: COCO 2017 train2017, 118,287 images
    c.size = 512  # dataset.py TrainDataset(size=512): a 512x512 resize before each encoder's own transform
    c.cache_embeddings = True  # both towers are frozen (train.py): encoded once here, every step there
    c.batch_size = 8  # training_config.yaml: train_batch_size 8
    c.learning_rate = 1e-5  # training_config.yaml: lr 1e-5
    c.optimizer = "adam"  # train.py: torch.optim.Adam(weight_decay=1e-4), L2 in the gradient (not AdamW)
    c.weight_decay = 1e-4
    c.schedule = "constant"  # train.py: no scheduler, no warm-up, no gradient clipping
    c.steps = 295_720  # training_config.yaml: epochs 20; 118,287 / 8 -> 14,786 steps per epoch
    c.eval_every = 1000  # training_config.yaml: eval_interval 1000
    c.save_every = 1000  # training_config.yaml: save_interval 1000
    c.val_fraction = 0.01  # the original validates on test2017 (README); here 1% of the training images
    c.precision = "float32"  # Accelerate's default settings: fp32
    return c
