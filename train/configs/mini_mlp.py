"""Mini recipe, stage 5: CLIPAway's MLP, as published (AlphaCLIP(image, alpha = 1) -> the image
encoder's embeds, MSE, torch-style Adam with weight decay 1e-4) but at the mini world's scale: 64 px,
larger batch and learning rate, on cached embeddings."""

from clipaway_jax.mini.configs import mini_stage


def get_config():
    return mini_stage("mlp", steps=3000, batch_size=64, learning_rate=1e-3, weight_decay=1e-4, size=64,
                      cache_embeddings=True)  # fmt: skip
