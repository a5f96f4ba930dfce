"""A pure, loss-generic training step and the LoRA wrapper of a loss (the losses are the networks', see
`asd_jax.models.networks`).

`TrainState` is a plain pytree (step, params, opt_state, extra), so Orbax saves it as is and jit shards it.
`extra` holds non-trainable state that the loss updates itself (e.g. SCAdaCos' adaptive scale): a loss
function has the signature

  loss_fn(params, extra, batch, rng) -> (loss, (metrics, new_extra))

and `make_train_step(loss_fn, tx)` turns it into `train_step(state, batch, rng) -> (state, metrics)`.
The rng handed to the loss is `fold_in(rng, step)`, so the loop passes one fixed key and a resumed run
draws the same dropout masks as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from asd_jax.runtime import sharding as shd
from asd_jax.training import lora

FINITE = "finite"  # the step's metric that is True when its loss, gradients, new params and extra are all finite

LossFn = Callable[[Any, Any, dict[str, jax.Array], jax.Array], tuple[jax.Array, tuple[dict, Any]]]


@flax.struct.dataclass
class TrainState:
  """Everything a training step reads and writes.

  Attributes:
    step: int32 scalar, number of updates applied.
    params: trainable tree (e.g. `{"model": ..., "lora": ...}`), float32.
    opt_state: optimiser state (none for frozen leaves).
    extra: non-trainable state updated by the loss (a possibly empty dict).
  """

  step: jax.Array
  params: Any
  opt_state: Any
  extra: Any = flax.struct.field(default_factory=dict)


def create_state(params: Any, tx: optax.GradientTransformation, extra: Any = None) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    extra={} if extra is None else extra)


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation,
                    labels: Any = None) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
  """The pure update `train_step(state, batch, rng) -> (state, metrics)` (not jitted; see `jit_train_step`).

  `labels` (the partition labels) restricts the reported `grad_norm` to trainable leaves, so the gradients
  of frozen weights are never needed and XLA drops them. `metrics[FINITE]` (a bool) says whether the loss,
  the gradient norm, the new params and the new extra are all finite: one fused reduction in the step, so
  the host learns it from the metrics it fetches anyway (the loop refuses to go on, or save, without it).
  """

  def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
    step_rng = jax.random.fold_in(rng, state.step)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (metrics, extra)), grads = grad_fn(state.params, state.extra, batch, step_rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    trainable = grads if labels is None else jax.tree.map(
        lambda g, l: g if l == lora.TRAINABLE else None, grads, labels)
    grad_norm = optax.global_norm(trainable)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    for leaf in jax.tree.leaves((params, extra)):
      if jnp.issubdtype(leaf.dtype, jnp.inexact):
        finite &= jnp.all(jnp.isfinite(leaf))
    metrics = {**metrics, "loss": loss, "grad_norm": grad_norm, FINITE: finite}
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, extra=extra)
    return new_state, metrics

  return train_step


def jit_train_step(train_step: Callable, mesh: Mesh, donate: bool = True) -> Callable:
  """`train_step` jitted for data parallelism: state and rng replicated, batch split over "data"."""
  rep = shd.replicated(mesh)
  return jax.jit(train_step, in_shardings=(rep, shd.batch_sharded(mesh), rep), out_shardings=(rep, rep),
                 donate_argnums=(0,) if donate else ())


def with_lora(loss_fn: LossFn, *, alpha: float) -> LossFn:
  """The loss over the trainable tree `{"model", ["lora"]}` of a loss over plain model params.

  LoRA factors (if any) are merged into the weights (`lora.merge_lora`) before `loss_fn` sees them, so
  gradients reach the factors through the merge and the model code knows nothing about LoRA.
  """

  def merged_loss(params, extra, batch, rng):
    return loss_fn(lora.merge_lora(params, alpha=alpha), extra, batch, rng)

  return merged_loss
