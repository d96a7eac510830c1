"""clipaway-jax: CLIPAway object removal and DCGD dual-CLIP guidance in JAX/Flax."""

__version__ = "0.1.0"
