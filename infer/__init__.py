"""Batch inference entry point: `python -m infer --help` (the same as `clipaway-jax infer`)."""
