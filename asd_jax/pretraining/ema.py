"""The EMA teacher of EAT pre-training: decay schedule and update, as pure functions of param trees.

Upstream (EAT `Data2VecMultiModel.set_num_updates` with fairseq's `EMAModule`, `ema_encoder_only=False`,
`ema_local_encoder=True`) keeps a full encoder copy as teacher: patch embedding, CLS token, position table,
input LayerNorm and every block. Before the forward pass of update n >= 1 it sets
`decay(n) = end - (end - start) * (1 - n / anneal_end_step)` (`end` from `anneal_end_step` on) and moves
every teacher tensor towards the student's current (already updated) one:
`teacher = teacher * decay + student * (1 - decay)`, in float32. The position table is not trained
(`requires_grad=False`), so it is copied from the student instead. The decoder has no teacher copy.

Here the train step does that update at its end with the just-updated student and `decay(step + 1)`, which
is the same sequence of teachers: the forward pass of update n sees the teacher after n EMA steps.
Upstream's first step after a resume skips its EMA step; this one does not (resume is bit-identical).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

COPIED = ("positions",)  # teacher leaves copied from the student rather than averaged (untrained buffers)


@dataclasses.dataclass(frozen=True)
class EmaConfig:
  """Teacher decay annealing (upstream `ema_decay`, `ema_end_decay`, `ema_anneal_end_step`).

  Defaults: `config/pretraining_AS2M.yaml` (EAT-base); EAT-large anneals over 150,000 updates.
  """

  decay: float = 0.9998
  end_decay: float = 0.99999
  anneal_end_step: int = 100_000


def one_minus_decay(config: EmaConfig, step: jax.Array) -> jax.Array:
  """`1 - decay(step)` as float32, computed directly (more exact than subtracting a float32 decay from 1)."""
  step = jnp.asarray(step, jnp.float32)
  start, end = 1.0 - config.decay, 1.0 - config.end_decay
  if config.decay == config.end_decay:
    return jnp.full(step.shape, start, jnp.float32)
  total = float(max(config.anneal_end_step, 1))
  remaining = jnp.where(step >= config.anneal_end_step, 0.0, jnp.clip(1.0 - step / total, 0.0, 1.0))
  return (end + (start - end) * remaining).astype(jnp.float32)


def decay(config: EmaConfig, step: jax.Array) -> jax.Array:
  """The EMA decay at update count `step` (0 gives `config.decay`), float32."""
  return 1.0 - one_minus_decay(config, step)


def _is_copied(path) -> bool:
  return any(getattr(k, "key", None) in COPIED for k in path)


def update(teacher: Any, student: Any, rate: jax.Array) -> Any:
  """`teacher * (1 - rate) + student * rate` leaf by leaf (rate = 1 - decay), the position table copied.

  `teacher` and `student` are encoder param trees of the same structure (the student's decoder is not part
  of it); everything stays float32.
  """
  rate = jnp.asarray(rate, jnp.float32)

  def move(path, t, s):
    if _is_copied(path):
      return s.astype(t.dtype)
    return (t * (1.0 - rate) + s.astype(t.dtype) * rate).astype(t.dtype)

  return jax.tree_util.tree_map_with_path(move, teacher, student)


def tracked_norm(params: Any) -> jax.Array:
  """Global L2 norm of the EMA-averaged leaves (upstream's `model_norm` / `ema_norm` logs, with apex)."""
  leaves = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0] if not _is_copied(path)]
  return optax.global_norm(leaves)
