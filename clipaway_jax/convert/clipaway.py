"""Table for CLIPAway's MLP (`model.safetensors`, keys `{idx}.weight|bias`)."""

from __future__ import annotations

from clipaway_jax.convert.engine import Rule, kernel
from clipaway_jax.models.clipaway import MLPConfig


def mlp_rules(config: MLPConfig) -> tuple[Rule, ...]:
    """Linear at 0, 3, ..., 3n (the last one is the output layer); LayerNorm at 1, 4, ..., 3n - 2."""
    n = config.number_of_hidden_layers
    rules = []
    for idx in range(0, 3 * n + 1, 3):
        rules += [
            Rule(rf"{idx}\.weight", f"layers.{idx}.kernel", kernel),
            Rule(rf"{idx}\.bias", f"layers.{idx}.bias"),
        ]
    for idx in range(1, 3 * n, 3):
        rules += [Rule(rf"{idx}\.weight", f"layers.{idx}.scale"), Rule(rf"{idx}\.bias", f"layers.{idx}.bias")]
    return tuple(rules)
