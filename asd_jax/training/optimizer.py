"""The fine-tuning optimiser: warm-up + decay schedule, clipping and AdamW over the trainable partition.

`make_optimizer` returns an `optax.partition` with two labels: TRAINABLE leaves get
clip-by-global-norm -> AdamW(schedule), FROZEN leaves get `set_to_zero` (no update, no optimiser state).
Weight decay applies to matrices only (kernels and LoRA factors), not to biases and norm scales.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import optax

from asd_jax.training import lora


def make_schedule(optim: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Learning-rate schedule: linear warm-up over `warmup_steps` (or `warmup_fraction` of training), then
  `schedule` = "cosine" (to `end_lr_fraction * learning_rate`), "linear" or "constant"."""
  total_steps = max(int(total_steps), 1)
  warmup = optim.warmup_steps or int(round(optim.warmup_fraction * total_steps))
  warmup = min(int(warmup), total_steps - 1) if total_steps > 1 else 0
  peak, end = optim.learning_rate, optim.learning_rate * optim.end_lr_fraction
  kind = optim.schedule
  if kind == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total_steps, end)
  if kind == "linear":
    decay = optax.linear_schedule(peak, end, max(total_steps - warmup, 1))
  elif kind == "constant":
    decay = optax.constant_schedule(peak)
  else:
    raise ValueError(f"config.optim.schedule={kind!r}; expected 'cosine', 'linear' or 'constant'")
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def make_optimizer(optim: ml_collections.ConfigDict, total_steps: int,
                   labels: Any) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """`(tx, schedule)` for params whose leaves are labelled by `labels` (see `lora.trainable_labels`); `optim`
  has every field of `configs/common.py`'s `optim`."""
  if optim.name != "adamw":
    raise ValueError(f"config.optim.name={optim.name!r}; only 'adamw' is implemented")
  schedule = make_schedule(optim, total_steps)
  steps = []
  if optim.grad_clip_norm:
    steps.append(optax.clip_by_global_norm(optim.grad_clip_norm))
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # noqa: E731
  steps.append(optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                           weight_decay=optim.weight_decay,
                           mask=decay_mask))
  tx = optax.partition({lora.TRAINABLE: optax.chain(*steps), lora.FROZEN: optax.set_to_zero()}, labels)
  return tx, schedule
