"""LoRA factors as parameters: the `{"model": <plain Flax params>, "lora": {<module path>: {"a", "b"}}}` tree that
LoRA fine-tuning trains (`asd_jax.finetuning.lora` makes and partitions it), and `merge_lora`, which folds the
factors into plain weights.

It lives with the models, apart from the training packages, because both sides use the one function: training
merges inside the loss and for embedding (`finetuning.restore`), and a detector, which stores a LoRA model as its
base encoder plus its factors, merges on loading (`asd_jax.detector`) exactly as the pipeline merged before it
embedded: the same function on the same float32 arrays, so the same parameters bit for bit.
"""

from __future__ import annotations

from typing import Any

import flax.traverse_util as tu
import jax.numpy as jnp

Params = Any


def _path(keys: tuple[str, ...]) -> str:
  return "/".join(str(k) for k in keys)


def merge_lora(params: Params, *, alpha: float) -> Params:
  """Plain model params `W + (alpha / r) A @ B` from `{"model", "lora"}`; `params["model"]` if no LoRA.

  Pure and jittable; used in the loss (gradients reach A and B through the product), for embedding and by the
  detector. NumPy arrays are computed through XLA as JAX arrays are (`jnp.asarray`), so equal arrays give equal
  bits whichever side they come from.
  """
  model, lora = params["model"], params.get("lora") or {}
  if not lora:
    return model
  flat = tu.flatten_dict(model)
  for keys, pair in tu.flatten_dict(lora, is_leaf=lambda _, v: isinstance(v, dict) and "a" in v).items():
    kernel_key = keys + ("kernel",)
    if kernel_key not in flat:
      raise KeyError(f"LoRA factors at {_path(keys)} have no kernel {_path(kernel_key)} in the model params")
    a, b = jnp.asarray(pair["a"]), jnp.asarray(pair["b"])
    kernel = jnp.asarray(flat[kernel_key])
    delta = (alpha / a.shape[-1]) * (a @ b)
    flat[kernel_key] = (kernel.astype(jnp.float32) + delta).astype(kernel.dtype)
  return tu.unflatten_dict(flat)
