"""Config values that make no sense, refused before any compute with one line naming the field.

`check(config)` walks every field of a config (a fine-tuning config, or a pipeline config with the
fine-tuning configs of its models inside) and applies `RULES` by the field's last two names, so
`train.epochs` is checked in `configs/demo.py` and as `models.fbeats.fine_tune.train.epochs` in a pipeline
config. A zero epoch count, a negative learning rate or a zero clip length would otherwise be a silent
no-op (no steps, an empty checkpoint) or a JAX shape error deep inside the first step. Fields a config does
not have are not checked; rules whose field is absent cost nothing, so every CLI can call it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import ml_collections

from asd_jax.audio import channels as channels_lib


def _number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def positive_int(value: Any) -> str | None:
  return None if _integer(value) and value > 0 else "must be a positive integer"


def non_negative_int(value: Any) -> str | None:
  return None if _integer(value) and value >= 0 else "must be an integer >= 0"


def positive(value: Any) -> str | None:
  return None if _number(value) and value > 0 else "must be a number > 0"


def non_negative(value: Any) -> str | None:
  return None if _number(value) and value >= 0 else "must be a number >= 0"


def fraction(value: Any) -> str | None:
  """In [0, 1]."""
  return None if _number(value) and 0 <= value <= 1 else "must be a number in [0, 1]"


def open_fraction(value: Any) -> str | None:
  """In [0, 1)."""
  return None if _number(value) and 0 <= value < 1 else "must be a number in [0, 1)"


def unit_interval(value: Any) -> str | None:
  """In (0, 1)."""
  return None if _number(value) and 0 < value < 1 else "must be a number in (0, 1)"


def channel_policy(value: Any) -> str | None:
  """A channel policy; "" too, which a pipeline config's `data.channels` takes for "each model's own" (a model
  config's "" is refused when its clips are first read, `datasets.wav_config`)."""
  if value == "" or value in channels_lib.POLICIES:
    return None
  return f"must be one of {', '.join(channels_lib.POLICIES)} (a pipeline's may be empty: each model's own)"


# Field (its last two names) -> rule returning why a value is wrong, or None.
RULES: dict[str, Callable[[Any], str | None]] = {
    "data.sample_rate": positive_int,
    "data.channels": channel_policy,
    "data.clip_seconds": positive,
    "data.num_workers": non_negative_int,
    "data.prefetch": non_negative_int,
    "model.dropout_rate": open_fraction,
    "loss.scale": positive,
    "loss.margin": non_negative,
    "loss.num_subclusters": positive_int,
    "lora.rank": positive_int,
    "lora.alpha": positive,
    "optim.learning_rate": positive,
    "optim.warmup_steps": non_negative_int,
    "optim.warmup_fraction": open_fraction,
    "optim.end_lr_fraction": fraction,
    "optim.weight_decay": non_negative,
    "optim.grad_clip_norm": non_negative,
    "optim.b1": open_fraction,
    "optim.b2": open_fraction,
    "optim.eps": positive,
    "train.epochs": positive_int,
    "train.batch_size": positive_int,
    "train.holdout_fraction": open_fraction,
    "augment.mixup_prob": fraction,
    "augment.time_masks": non_negative_int,
    "augment.time_width": non_negative_int,
    "augment.freq_masks": non_negative_int,
    "augment.freq_width": non_negative_int,
    "train.eval_every": non_negative_int,
    "train.eval_clips": non_negative_int,
    "train.log_every": positive_int,
    "train.checkpoint_every": non_negative_int,
    "train.keep_checkpoints": positive_int,
    "embed.batch_size": positive_int,
    # pipeline configs (train_all: 0 is unset, `pipeline.specs.TRAIN_ALL`)
    "train_all.epochs": non_negative_int,
    "train_all.batch_size": non_negative_int,
    "train_all.clip_seconds": non_negative,
    "threshold_quantile": unit_interval,
    "grid_step": lambda v: None if _number(v) and 0 < v <= 1 else "must be a number in (0, 1]",
}

HINTS = {"lora.rank": " (to fine-tune without LoRA set lora.enabled=False)",
         "train.checkpoint_every": " (0: only at the end)"}


def _leaves(config: Any, prefix: str) -> list[tuple[str, Any]]:
  if isinstance(config, (ml_collections.ConfigDict, dict)):
    items = config.items()
    return [leaf for key, value in items for leaf in _leaves(value, f"{prefix}.{key}" if prefix else key)]
  return [(prefix, config)]


def problems(config: ml_collections.ConfigDict) -> list[str]:
  """`config.<field>=<value>: <why>` for every field that breaks its rule."""
  found = []
  for path, value in _leaves(config, ""):
    names = path.split(".")
    for key in (".".join(names[-2:]), names[-1]):
      rule = RULES.get(key)
      why = rule(value) if rule is not None else None
      if why:
        found.append(f"config.{path}={value!r} {why}{HINTS.get(key, '')}")
        break
  return found


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming every field whose value makes no sense (one line for one field)."""
  found = problems(config)
  if found:
    raise ValueError("; ".join(found))
