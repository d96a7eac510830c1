"""Training entry point: `python -m train {mlp,unet} --help` (the same as `clipaway-jax train`)."""
