"""The trainable/frozen partition and the optimiser over it: warm-up + decay schedule, clipping, AdamW.

Every leaf of a run's trainable tree is labelled TRAINABLE or FROZEN (fine-tuning: `asd_jax.finetuning.lora
.trainable_labels`; pre-training: `asd_jax.pretraining.loss.trainable_labels`). `make_optimizer` returns an
`optax.partition` over those labels: TRAINABLE leaves get clip-by-global-norm -> AdamW(schedule), FROZEN
leaves get `set_to_zero` (no update, no optimiser state). Weight decay applies to matrices only (kernels and
LoRA factors), not to biases and norm scales. `summary` / `format_summary` count total and trainable
parameters per subtree (what `--dry_run` prints).
"""

from __future__ import annotations

from typing import Any

import flax.traverse_util as tu
import jax
import ml_collections
import optax

TRAINABLE = "trainable"
FROZEN = "frozen"


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
  """`(tx, schedule)` for params whose leaves are labelled by `labels` (TRAINABLE / FROZEN); `optim`
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
  tx = optax.partition({TRAINABLE: optax.chain(*steps), FROZEN: optax.set_to_zero()}, labels)
  return tx, schedule


def summary(params: Any, labels: Any, extra: Any = None, depth: int = 2) -> list[tuple[str, int, int]]:
  """`(subtree path, total, trainable)` parameter counts per subtree up to `depth` levels, plus "total".

  `extra` (a loss' non-trainable state, e.g. the EMA teacher) is counted under "extra/<its keys>", never trained.
  """
  if extra:
    params = {**params, "extra": extra}
    labels = {**labels, "extra": jax.tree.map(lambda _: FROZEN, extra)}
  rows: dict[str, list[int]] = {}
  flat_l = tu.flatten_dict(labels)
  for keys, leaf in tu.flatten_dict(params).items():
    row = rows.setdefault("/".join(str(k) for k in keys[:depth + (keys[0] == "extra")]), [0, 0])
    row[0] += int(leaf.size)
    row[1] += int(leaf.size) if flat_l[keys] == TRAINABLE else 0
  out = [(name, total, train) for name, (total, train) in sorted(rows.items())]
  out.append(("total", sum(r[1] for r in out), sum(r[2] for r in out)))
  return out


def format_summary(params: Any, labels: Any, extra: Any = None, depth: int = 3) -> str:
  """`summary` as a table of total and trainable parameter counts per subtree."""
  rows = summary(params, labels, extra, depth)
  width = max(len(name) for name, _, _ in rows)
  lines = [f"{'subtree':<{width}}  {'total':>13}  {'trainable':>13}"]
  lines += [f"{name:<{width}}  {total:>13,}  {train:>13,}" for name, total, train in rows]
  return "\n".join(lines)
