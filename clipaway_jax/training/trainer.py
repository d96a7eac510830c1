"""A small, complete training loop: optax, sharded TrainState, one AOT-compiled donated train_step,
Orbax CheckpointManager (async, last K + best, exact resume incl. data position), logging.

The task supplies `loss_fn(params, frozen, batch, rng) -> loss` and its params; the trainer owns the
rest. Per-step randomness is `fold_in(seed key, step)`, so a resumed run is bit-identical.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from clipaway_jax import xla
from clipaway_jax.sharding import batch_sharding, param_shardings, replicated
from clipaway_jax.training.data import LoaderState


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    global_batch: int = 8
    learning_rate: float = 1e-5
    weight_decay: float = 1e-4
    optimizer: str = "adam"  # "adam": torch Adam (L2 added to the gradient); "adamw": decoupled decay
    schedule: str = "constant"  # or "warmup_cosine"
    warmup_steps: int = 0
    clip_grad_norm: float = 0.0  # 0 = off
    seed: int = 0
    save_every: int = 1000
    keep: int = 3
    eval_every: int = 1000
    log_every: int = 50
    ema_decay: float = 0.0  # > 0: also keep an exponential moving average of the params (what is exported)


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    ema: Any = None  # the params' moving average when cfg.ema_decay > 0 (None adds no leaves)


def ema_decay(decay: float, step: jax.Array) -> jax.Array:
    """The decay at `step` (counted from 0), as diffusers' EMAModel without its optional warmup:
    min(decay, (1 + step) / (10 + step)), so that the first steps' params do not linger in a short run."""
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def learning_rate(cfg: TrainConfig) -> optax.Schedule:
    if cfg.schedule == "warmup_cosine":
        warmup = max(1, min(cfg.warmup_steps, cfg.steps - 1))  # a short run still decays (quick trials, tests)
        return optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, warmup, max(cfg.steps, warmup + 1))
    if cfg.schedule == "constant":
        return optax.constant_schedule(cfg.learning_rate)
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    lr = learning_rate(cfg)
    parts = [optax.clip_by_global_norm(cfg.clip_grad_norm)] if cfg.clip_grad_norm > 0 else []
    if cfg.optimizer == "adam":
        parts += [optax.add_decayed_weights(cfg.weight_decay), optax.scale_by_adam(), optax.scale_by_learning_rate(lr)]
    elif cfg.optimizer == "adamw":
        parts += [optax.adamw(lr, weight_decay=cfg.weight_decay)]
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
    return optax.chain(*parts)


class NonFiniteError(FloatingPointError):
    pass


class Trainer:
    def __init__(self, cfg: TrainConfig, loss_fn: Callable, abstract_params, params, workdir: Path, mesh,
                 rules, frozen=None):  # fmt: skip
        self.cfg, self.mesh, self.workdir = cfg, mesh, Path(workdir)
        self.optimizer, self.schedule = make_optimizer(cfg), learning_rate(cfg)
        p_shard = param_shardings(abstract_params, mesh, rules)["params"]
        params = jax.device_put(flax.core.meta.unbox(params), p_shard)
        opt_state = jax.jit(self.optimizer.init, out_shardings=None)(params)
        o_shard = optax.tree_map_params(self.optimizer, lambda _, s: s, opt_state, p_shard,
                                        transform_non_params=lambda _: replicated(mesh))  # fmt: skip
        opt_state = jax.device_put(opt_state, o_shard)
        ema, e_shard = (jax.tree_util.tree_map(jnp.copy, params), p_shard) if cfg.ema_decay > 0 else (None, None)
        self.state_sharding = TrainState(replicated(mesh), p_shard, o_shard, e_shard)
        self.state = TrainState(jax.device_put(jnp.zeros((), jnp.int32), replicated(mesh)), params, opt_state, ema)
        self.frozen = frozen
        self.loss_fn = loss_fn
        self._eval = xla.jit(loss_fn)
        self.key = jax.random.key(cfg.seed)
        self._compiled = None
        self.log = MetricsLog(self.workdir)
        specs = flax.traverse_util.flatten_dict(jax.tree_util.tree_map(lambda s: str(s.spec), p_shard), sep="/")
        self.log.write({"event": "param_sharding", "mesh": dict(mesh.shape), "specs": specs})

    # --- the step -----------------------------------------------------------------------------

    def _step(self, state: TrainState, frozen, batch):
        rng = jax.random.fold_in(self.key, state.step)
        loss, grads = jax.value_and_grad(self.loss_fn)(state.params, frozen, batch, rng)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads)}
        ema = state.ema
        if ema is not None:
            d = ema_decay(self.cfg.ema_decay, state.step)
            ema = jax.tree_util.tree_map(lambda e, p: d * e + (1 - d) * p, ema, params)
        return TrainState(state.step + 1, params, opt_state, ema), metrics

    def compiled(self, batch):
        if self._compiled is None:
            batch_shardings = jax.tree_util.tree_map(lambda x: batch_sharding(self.mesh, np.ndim(x)), batch)
            step = xla.jit(self._step, in_shardings=(self.state_sharding, None, batch_shardings),
                           out_shardings=(self.state_sharding, replicated(self.mesh)), donate_argnums=0)  # fmt: skip
            start = time.perf_counter()
            self._compiled = step.lower(self.state, self.frozen, batch).compile()
            self.log.write({"event": "compiled", "seconds": round(time.perf_counter() - start, 3)})
        return self._compiled

    def global_batch(self, local: dict) -> dict:
        return {
            k: jax.make_array_from_process_local_data(batch_sharding(self.mesh, v.ndim), v) for k, v in local.items()
        }

    def train_step(self, local_batch: dict) -> dict:
        batch = self.global_batch(local_batch)
        self.state, metrics = self.compiled(batch)(self.state, self.frozen, batch)
        metrics = {k: float(v) for k, v in metrics.items()}
        step = int(self.state.step)
        if not all(math.isfinite(v) for v in metrics.values()):
            raise NonFiniteError(f"non-finite loss or gradient at step {step} ({metrics}); "
                                 "the last checkpoint is intact")  # fmt: skip
        return {"step": step, **metrics}

    def lr(self, step: int) -> float:
        return float(self.schedule(step))

    def eval_loss(self, local_batch: dict) -> float:
        """The loss on a batch without updating (validation; fixed key, same compiler options as training)."""
        batch = self.global_batch(local_batch)
        return float(self._eval(self.state.params, self.frozen, batch, jax.random.key(0)))


class Checkpoints:
    """Last K (every `save_every` steps, async) under workdir/checkpoints; the best by validation loss
    under workdir/best. Each holds the TrainState and the data iterator position."""

    def __init__(self, workdir: Path, cfg: TrainConfig):
        options = ocp.CheckpointManagerOptions(max_to_keep=cfg.keep, save_interval_steps=1,
                                               enable_async_checkpointing=True)  # fmt: skip
        self.last = ocp.CheckpointManager((workdir / "checkpoints").absolute(), options=options)
        best = ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda m: m["val_loss"], best_mode="min")
        self.best = ocp.CheckpointManager((workdir / "best").absolute(), options=best)

    def save(self, step: int, state: TrainState, loader: LoaderState, val_loss: float | None = None):
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  loader=ocp.args.JsonSave(dataclasses.asdict(loader)))  # fmt: skip
        self.last.save(step, args=args)
        if val_loss is not None:
            self.best.save(step, args=args, metrics={"val_loss": float(val_loss)})

    def restore_latest(self, abstract_state) -> tuple[TrainState, LoaderState] | None:
        step = self.last.latest_step()
        if step is None:
            return None
        restored = self.last.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                                   loader=ocp.args.JsonRestore()))  # fmt: skip
        return restored["state"], LoaderState(**restored["loader"])

    def close(self):
        self.last.wait_until_finished()
        self.best.wait_until_finished()
        self.last.close()
        self.best.close()


class MetricsLog:
    """metrics.jsonl always; TensorBoard event files when the `tensorboard` package is installed."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.main = jax.process_index() == 0
        self._tb = _tensorboard_writer(self.workdir / "tensorboard") if self.main else None

    def write(self, record: dict) -> None:
        if not self.main:
            return
        with open(self.workdir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None and "step" in record:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    self._tb(key, float(value), int(record["step"]))


def _tensorboard_writer(folder: Path):
    try:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        return None
    writer = EventFileWriter(str(folder))

    def scalar(tag: str, value: float, step: int):
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=value)])
        writer.add_event(Event(summary=summary, step=step, wall_time=time.time()))
        writer.flush()

    return scalar
