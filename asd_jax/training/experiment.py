"""From a config and its network to the pieces of a fine-tuning run: trainable tree, labels, optimiser, loss.

Shared by the `train` and `embed` libraries and by `--dry_run`. The network (module, random init, loss,
outputs, pretrained subtrees) comes from `asd_jax.models.networks.build_network`; everything here is one code
path for every network: LoRA factors over the targeted kernels of every encoder, the trainable/frozen
partition (the head, plus `config.lora.extra_trainable`), the optimiser, the LoRA merge in the loss, the
`TrainState` (with `extra`, so checkpoints and resume carry it) and the parameter summary. The trainable tree
is `{"model": params}` for full fine-tuning and `{"model": params, "lora": factors}` with LoRA.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.traverse_util as tu
import jax
import ml_collections

from asd_jax.models import networks
from asd_jax.training import lora
from asd_jax.training import optimizer
from asd_jax.training import train_step as ts

Params = Any
HEAD = r"^head/"  # the classifier's ArcFace head: trained with LoRA too (the report's "LoRA + head")


def _check_lora_scopes(factors: Params, scopes: tuple[tuple[str, ...], ...], targets: str) -> None:
  covered = {keys[:len(scope)] for keys in tu.flatten_dict(factors) for scope in scopes}
  for scope in scopes:
    if scope not in covered:
      raise ValueError(f"LoRA targets {targets!r} match no kernel under {'/'.join(scope)}: that encoder would "
                       "stay frozen; widen config.lora.targets")


def init_trainable(config: ml_collections.ConfigDict, network: networks.Network, rng: jax.Array, *,
                   abstract: bool = False) -> tuple[Params, Params]:
  """`(trainable tree {"model", ["lora"]}, extra)`, pretrained subtrees in place; `abstract` gives
  ShapeDtypeStructs (no compute, no checkpoint values)."""
  model_rng, lora_rng = jax.random.split(rng)

  def init():
    params, extra = network.init(model_rng)
    tree = {"model": params}
    if config.lora.enabled:
      tree["lora"] = lora.init_lora(params, lora_rng, rank=config.lora.rank, targets=config.lora.targets)
      _check_lora_scopes(tree["lora"], network.lora_scopes, config.lora.targets)
    return tree, extra

  if abstract:
    return jax.eval_shape(init)
  tree, extra = jax.jit(init)()
  tree["model"] = networks.with_pretrained(network, tree["model"])
  return tree, extra


def trainable_pattern(config: ml_collections.ConfigDict) -> str:
  """Regex of the model parameters trained besides LoRA's factors: the head, and `config.lora.extra_trainable`
  when set (e.g. `"norm"` for every LayerNorm; see configs/common.py)."""
  extra = config.lora.get("extra_trainable", "")
  return f"({HEAD})|({extra})" if extra else HEAD


def labels_for(config: ml_collections.ConfigDict, tree: Params) -> Params:
  return lora.trainable_labels(tree, train_encoder=not config.lora.enabled,
                               trainable_modules=trainable_pattern(config), never_trained=config.model.never_trained)


def make_optimizer(config: ml_collections.ConfigDict, labels: Params, total_steps: int):
  return optimizer.make_optimizer(config.optim, total_steps, labels)


def loss_fn(config: ml_collections.ConfigDict, network: networks.Network) -> ts.LossFn:
  """The network's loss over the trainable tree (LoRA factors merged first)."""
  if network.loss is None:
    raise ValueError(f"config.model.encoder={network.name!r} has nothing to train (it is a non-learned reference)")
  return ts.with_lora(network.loss, alpha=config.lora.alpha)


@dataclasses.dataclass(frozen=True)
class Run:
  """A run's initial state and what the train step is made from."""

  state: ts.TrainState  # concrete, or ShapeDtypeStructs when built with `abstract=True`
  labels: Params  # TRAINABLE / FROZEN per leaf of `state.params`
  tx: Any  # the optax partition
  loss: ts.LossFn  # over the trainable tree

  def train_step(self):
    return ts.make_train_step(self.loss, self.tx, self.labels)


def create_run(config: ml_collections.ConfigDict, network: networks.Network, rng: jax.Array, total_steps: int, *,
               abstract: bool = False) -> Run:
  """Initial `TrainState` (params, optimiser state, extra), labels, optimiser and loss of `network`."""
  tree, extra = init_trainable(config, network, rng, abstract=abstract)
  labels = labels_for(config, tree)
  tx, _ = make_optimizer(config, labels, total_steps)
  if abstract:
    state = jax.eval_shape(lambda t, e: ts.create_state(t, tx, e), tree, extra)
  else:
    state = ts.create_state(tree, tx, extra)
  return Run(state=state, labels=labels, tx=tx, loss=loss_fn(config, network))


def summary_rows(tree: Params, labels: Params, extra: Params = None, depth: int = 3) -> list[tuple[str, int, int]]:
  """`(subtree, total, trainable)` counts of the trainable tree and of the loss' `extra` state (never trained)."""
  if extra:
    tree = {**tree, "extra": extra}
    labels = {**labels, "extra": jax.tree.map(lambda _: lora.FROZEN, extra)}
  return lora.summary(tree, labels, depth=depth)


def format_summary(tree: Params, labels: Params, extra: Params = None, depth: int = 3) -> str:
  """A table of total and trainable parameter counts per subtree."""
  rows = summary_rows(tree, labels, extra, depth)
  width = max(len(name) for name, _, _ in rows)
  lines = [f"{'subtree':<{width}}  {'total':>13}  {'trainable':>13}"]
  lines += [f"{name:<{width}}  {total:>13,}  {train:>13,}" for name, total, train in rows]
  return "\n".join(lines)
