"""The one training step, pure and loss-generic: fine-tuning and pre-training both train through it.

`TrainState` is a plain pytree (step, params, opt_state, extra), so Orbax saves it as is and jit shards it.
`extra` holds non-trainable state. A loss function has the signature

  loss_fn(params, extra, batch, rng) -> (loss, (metrics, new_extra))

and may update `extra` itself (SCAdaCos' adaptive scale, a fine-tuning loss); state that must follow the
*updated* parameters is updated after the optimiser by an optional

  update_extra(params, extra, step) -> (new_extra, metrics)

(EAT pre-training's EMA teacher; `step` is the number of updates before this one). `make_train_step` turns
them into `train_step(state, batch, rng) -> (state, metrics)`: value_and_grad, the optimiser, the extra update,
the gradient norm of the trainable leaves, the learning rate, and `FINITE`, which the loop reads to stop a
diverging run before it saves anything of it. The rng handed to the loss is `fold_in(rng, step)`, so the loop
passes one fixed key and a resumed run draws the same dropout masks (and pre-training masks) as an
uninterrupted one. `TrainSetup` is what a run builds before training: its initial state and the pieces of its
step (`asd_jax.finetuning.fine_tune.setup`, `asd_jax.pretraining.pretrain.build`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from asd_jax.runtime import sharding as shd
from asd_jax.training import optimizer

FINITE = "finite"  # the step's metric that is True when its loss, gradients, new params and extra are all finite

LossFn = Callable[[Any, Any, dict[str, jax.Array], jax.Array], tuple[jax.Array, tuple[dict, Any]]]
UpdateExtraFn = Callable[[Any, Any, jax.Array], tuple[Any, dict]]  # (new params, extra, step) -> (extra, metrics)


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


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, labels: Any = None, *,
                    update_extra: UpdateExtraFn | None = None, schedule: optax.Schedule | None = None
                    ) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
  """The pure update `train_step(state, batch, rng) -> (state, metrics)` (not jitted; see `jit_train_step`).

  `labels` (the partition labels, `optimizer.TRAINABLE` / `FROZEN`) restricts the reported `grad_norm` to
  trainable leaves, so the gradients of frozen weights are never needed and XLA drops them. `update_extra`
  (see the module docstring) runs after the optimiser; its metrics join the loss'. `schedule` adds the
  `learning_rate` of the update. `metrics[FINITE]` (a bool) says whether the loss, the gradient norm, the new
  params and the new extra are all finite: one fused reduction in the step, so the host learns it from the
  metrics it fetches anyway (the loop refuses to go on, or save, without it).
  """

  def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
    step_rng = jax.random.fold_in(rng, state.step)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (metrics, extra)), grads = grad_fn(state.params, state.extra, batch, step_rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if update_extra is not None:
      extra, extra_metrics = update_extra(params, extra, state.step)
      metrics = {**metrics, **extra_metrics}
    trainable = grads if labels is None else jax.tree.map(
        lambda g, l: g if l == optimizer.TRAINABLE else None, grads, labels)
    grad_norm = optax.global_norm(trainable)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    for leaf in jax.tree.leaves((params, extra)):
      if jnp.issubdtype(leaf.dtype, jnp.inexact):
        finite &= jnp.all(jnp.isfinite(leaf))
    metrics = {**metrics, "loss": loss, "grad_norm": grad_norm, FINITE: finite}
    if schedule is not None:
      metrics["learning_rate"] = jnp.asarray(schedule(state.step), jnp.float32)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, extra=extra)
    return new_state, metrics

  return train_step


@dataclasses.dataclass(frozen=True)
class TrainSetup:
  """A training run's initial state and what its step is made from.

  Attributes:
    state: the step-0 `TrainState` (concrete, or ShapeDtypeStructs when built abstractly for a summary).
    labels: TRAINABLE / FROZEN per leaf of `state.params` (the optimiser's partition).
    tx: the optimiser.
    loss: the `LossFn`.
    update_extra: the optional `UpdateExtraFn`.
    schedule: the learning-rate schedule (logged as `learning_rate`).
  """

  state: TrainState
  labels: Any
  tx: optax.GradientTransformation
  loss: LossFn
  update_extra: UpdateExtraFn | None = None
  schedule: optax.Schedule | None = None

  def train_step(self) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    return make_train_step(self.loss, self.tx, self.labels, update_extra=self.update_extra, schedule=self.schedule)


def jit_train_step(train_step: Callable, mesh: Mesh, donate: bool = True) -> Callable:
  """`train_step` jitted for data parallelism: state and rng replicated, batch split over "data"."""
  rep = shd.replicated(mesh)
  return jax.jit(train_step, in_shardings=(rep, shd.batch_sharded(mesh), rep), out_shardings=(rep, rep),
                 donate_argnums=(0,) if donate else ())
