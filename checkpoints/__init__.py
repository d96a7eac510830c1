"""Converted checkpoints land in this folder (git-ignored); `python -m checkpoints.convert` makes them."""
