"""LoRA as a parameter partition: factors in their own subtree, merged into the weights at apply time.

The trainable tree is `{"model": <plain Flax params>, "lora": {<module path>: {"a": [in, r], "b": [r, out]}}}`.
`init_lora` makes a factor pair for every kernel whose '/'-joined path matches a regex (A ~ U(-1/sqrt(in), 1/sqrt(in)),
the Kaiming-uniform init of the original LoRA code, B = 0, so training starts from the pretrained model).
`merge_lora` (`asd_jax.models.lora_factors`, where the detector also reads it) forms `W + (alpha / r) A @ B`
functionally, inside the loss, so the model code knows nothing about LoRA (`with_lora` wraps a loss over plain
params); `trainable_labels` tells the optimiser's partition
(`asd_jax.training.optimizer`) which leaves get updates: the LoRA factors and the head, never the frozen
encoder (which also gets no optimiser state). `merge_lora` on trained factors is also the step that folds
them into plain weights for embedding and export.
"""

from __future__ import annotations

import re
from typing import Any

import flax.traverse_util as tu
import jax
import jax.numpy as jnp

from asd_jax.models.lora_factors import merge_lora
from asd_jax.training.optimizer import FROZEN, TRAINABLE

# q, v and out projections of every attention block (the report's LoRA targets).
DEFAULT_TARGETS = r"(^|/)(q_proj|v_proj|out_proj)/kernel$"

Params = Any


def _path(keys: tuple[str, ...]) -> str:
  return "/".join(str(k) for k in keys)


def init_lora(model_params: Params, rng: jax.Array, *, rank: int, targets: str = DEFAULT_TARGETS) -> Params:
  """LoRA factors for every 2-D kernel of `model_params` whose path matches `targets`.

  Returns a nested dict mirroring the model tree down to each targeted module, whose leaves are
  `{"a": [in, rank], "b": [rank, out]}` float32 (the "kernel" level is replaced by the factor pair).
  Raises ValueError when nothing matches (a misspelt regex would otherwise train the head only).
  """
  pattern = re.compile(targets)
  flat = tu.flatten_dict(model_params)
  hits = sorted((k, v) for k, v in flat.items() if pattern.search(_path(k)))
  if not hits:
    raise ValueError(f"LoRA targets {targets!r} match no parameter; paths look like {_path(next(iter(flat)))!r}")
  lora = {}
  for i, (keys, kernel) in enumerate(hits):
    if kernel.ndim != 2:
      raise ValueError(f"LoRA target {_path(keys)} has shape {kernel.shape}; expected a 2-D [in, out] kernel")
    fan_in, fan_out = kernel.shape
    bound = 1.0 / fan_in**0.5
    a = jax.random.uniform(jax.random.fold_in(rng, i), (fan_in, rank), jnp.float32, -bound, bound)
    lora[keys[:-1] + ("a",)] = a
    lora[keys[:-1] + ("b",)] = jnp.zeros((rank, fan_out), jnp.float32)
  return tu.unflatten_dict(lora)


def trainable_labels(params: Params, *, train_encoder: bool, trainable_modules: str = r"^head/",
                     never_trained: str = "") -> Params:
  """Label tree (TRAINABLE/FROZEN per leaf) for `optax.partition` over `{"model", "lora"}` params.

  LoRA factors are always trainable; model leaves are trainable when `train_encoder` (full fine-tuning)
  or when their path (inside "model") matches `trainable_modules` (the head), unless it matches
  `never_trained` (fixed buffers stored as parameters, e.g. EAT's sin-cos positions).
  """
  pattern = re.compile(trainable_modules)
  fixed = re.compile(never_trained) if never_trained else None

  def label(path, _):
    keys = tuple(getattr(p, "key", p) for p in path)
    if keys[0] == "lora":
      return TRAINABLE
    name = _path(keys[1:])
    if fixed is not None and fixed.search(name):
      return FROZEN
    return TRAINABLE if train_encoder or pattern.search(name) else FROZEN

  return jax.tree_util.tree_map_with_path(label, params)


def with_lora(loss_fn: Any, *, alpha: float) -> Any:
  """The loss over the trainable tree `{"model", ["lora"]}` of a loss over plain model params.

  LoRA factors (if any) are merged into the weights (`merge_lora`) before `loss_fn` sees them, so gradients
  reach the factors through the merge and the model code knows nothing about LoRA. Both losses have the
  train step's signature (`asd_jax.training.train_step.LossFn`).
  """

  def merged_loss(params, extra, batch, rng):
    return loss_fn(merge_lora(params, alpha=alpha), extra, batch, rng)

  return merged_loss
