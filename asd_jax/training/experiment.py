"""From a config to the pieces of a fine-tuning run: model, initial parameters, labels, optimiser, loss.

Shared by the `train` and `embed` CLIs and by `--dry_run`. The trainable tree is `{"model": params}` for
full fine-tuning and `{"model": params, "lora": factors}` with LoRA; see `asd_jax.training.lora`.
"""

from __future__ import annotations

from typing import Any

import flax.traverse_util as tu
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from asd_jax.models import classifier
from asd_jax.models import registry
from asd_jax.training import lora
from asd_jax.training import optimizer
from asd_jax.training import train_step as ts


def compute_dtype(name: str) -> jnp.dtype:
  """"auto" is bfloat16 on GPU/TPU and float32 on CPU; otherwise the named dtype."""
  if name == "auto":
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  return jnp.dtype(name)


def clip_samples(config: ml_collections.ConfigDict) -> int:
  return int(round(config.data.clip_seconds * config.data.sample_rate))


def architecture(model_cfg: ml_collections.ConfigDict) -> tuple[Any, Any]:
  """`(architecture config, encoder params or None)`: from `init_checkpoint` if set, else the preset."""
  entry = registry.get(model_cfg.encoder)
  if model_cfg.get("init_checkpoint"):
    return entry.load(model_cfg.init_checkpoint)
  return registry.preset(model_cfg.encoder, model_cfg.preset), None


def build_model(model_cfg: ml_collections.ConfigDict, arch: Any, num_classes: int) -> classifier.Classifier:
  entry = registry.get(model_cfg.encoder)
  encoder = entry.build(arch, compute_dtype(model_cfg.dtype))
  return classifier.Classifier(encoder=encoder, num_classes=num_classes, frontend=entry.frontend(),
                               dropout_rate=model_cfg.dropout_rate, pool=model_cfg.get("pool") or entry.pool)


def _with_encoder(params: Any, encoder_params: Any, source: str) -> Any:
  """`params` with its "encoder" subtree replaced by `encoder_params` (float32), after a shape check."""
  want = {k: v.shape for k, v in tu.flatten_dict(params["encoder"]).items()}
  got = {k: np.shape(v) for k, v in tu.flatten_dict(encoder_params).items()}
  if want != got:
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    shapes = [(k, want[k], got[k]) for k in set(want) & set(got) if want[k] != got[k]]
    raise ValueError(f"{source}: encoder parameters do not fit the model: missing {missing[:5]}, "
                     f"unexpected {extra[:5]}, shape mismatches (path, expected, found) {shapes[:5]}")
  return {**params, "encoder": jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), encoder_params)}


def init_trainable(config: ml_collections.ConfigDict, model: classifier.Classifier, rng: jax.Array,
                   encoder_params: Any = None, *, abstract: bool = False) -> Any:
  """The trainable tree `{"model": ..., ["lora": ...]}`; `abstract` returns ShapeDtypeStructs (no compute)."""
  init_rng, lora_rng = jax.random.split(rng)
  wav = jnp.zeros((1, clip_samples(config)), jnp.float32)

  def init():
    params = model.init(init_rng, wav)["params"]
    tree = {"model": params}
    if config.lora.enabled:
      tree["lora"] = lora.init_lora(params, lora_rng, rank=config.lora.rank, targets=config.lora.targets)
    return tree

  if abstract:
    return jax.eval_shape(init)
  tree = jax.jit(init)()
  if encoder_params is not None:
    tree["model"] = _with_encoder(tree["model"], encoder_params, config.model.init_checkpoint)
  return tree


def labels_for(config: ml_collections.ConfigDict, tree: Any) -> Any:
  return lora.trainable_labels(tree, train_encoder=not config.lora.enabled,
                               never_trained=config.model.get("never_trained", ""))


def make_optimizer(config: ml_collections.ConfigDict, labels: Any, total_steps: int):
  return optimizer.make_optimizer(config.optim, total_steps, labels)


def loss_fn(config: ml_collections.ConfigDict, model: classifier.Classifier) -> ts.LossFn:
  return ts.classification_loss(model, lora_alpha=config.lora.alpha, scale=config.loss.scale,
                                margin=config.loss.margin)


def format_summary(tree: Any, labels: Any, depth: int = 3) -> str:
  """A table of total and trainable parameter counts per subtree."""
  rows = lora.summary(tree, labels, depth=depth)
  width = max(len(name) for name, _, _ in rows)
  lines = [f"{'subtree':<{width}}  {'total':>13}  {'trainable':>13}"]
  lines += [f"{name:<{width}}  {total:>13,}  {train:>13,}" for name, total, train in rows]
  return "\n".join(lines)
