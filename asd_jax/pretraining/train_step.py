"""The pure EAT pre-training step: masks and mask tokens from the step's key, the objective, AdamW, the EMA.

State: the fine-tuning `TrainState` pytree, with `params = {"student": EAT params, "decoder": decoder
params}` (trained; the position table is frozen as upstream never trains it) and `extra = {"teacher": EAT
params}` (the EMA teacher, float32, updated inside the step: no host round trip, no host copy). One step:

1. key = fold_in(rng, step) -> block masks `[batch * clone_batch, patches]` (`masking.block_mask`), mask
   tokens N(0, mask_noise_std^2) `[batch * clone_batch, patches, dim]` and dropout keys;
2. fbank of the batch's waveforms (EAT front end) -> `objective.eat_pretraining_objective`;
3. gradients of its `loss` (summed losses / masked-patch count, as fairseq) -> clip, AdamW;
4. teacher <- EMA towards the updated student with decay(step + 1) (`ema.update`).

Metrics (float32 scalars): the objective's `loss`, `loss_regression`, `loss_cls`, `target_var`, `pred_var`,
`masked_pct`; `ema_decay` as upstream logs it (decay of the teacher this step used, times 1000);
`model_norm` / `ema_norm` (norms of the EMA-tracked student / teacher tensors after the update, which upstream
logs when apex is installed), `grad_norm` (before clipping) and `learning_rate`.

`init_params` draws upstream's initialisation (fairseq's BERT init for Linear layers, Xavier for the patch
convolution, N(0, 1) CLS token, the sin-cos position table, PyTorch defaults for the decoder); the teacher
starts as a copy of the student.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from asd_jax.models import eat
from asd_jax.models import eat_decoder
from asd_jax.pretraining import config as config_lib
from asd_jax.pretraining import ema
from asd_jax.pretraining import masking
from asd_jax.pretraining import objective
from asd_jax.training import lora
from asd_jax.training import train_step as ts

FROZEN_PATHS = (("student", "positions"),)  # never trained (upstream: requires_grad=False)


def _upstream_leaf(path: tuple[str, ...], leaf: jax.Array, rng: jax.Array, patch_fan_in: int) -> jax.Array:
  name = path[-1]
  if path[0] == "patch_embed":
    if name == "bias":  # PyTorch's Conv2d default: U(+-1/sqrt(fan_in)), fan_in = 16 * 16
      bound = 1.0 / math.sqrt(patch_fan_in)
      return jax.random.uniform(rng, leaf.shape, jnp.float32, -bound, bound)
    fan_out = leaf.shape[-1]  # Xavier uniform on the [D, 16 * 16] view of the kernel
    bound = math.sqrt(6.0 / (patch_fan_in + fan_out))
    return jax.random.uniform(rng, leaf.shape, jnp.float32, -bound, bound)
  if name == "cls_token":
    return jax.random.normal(rng, leaf.shape, jnp.float32)
  if name == "positions":
    return leaf  # the sin-cos table
  if name == "kernel":  # Linear layers: fairseq's init_bert_params
    return 0.02 * jax.random.normal(rng, leaf.shape, jnp.float32)
  if name == "bias" and path[-2] in ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"):
    return jnp.zeros(leaf.shape, jnp.float32)
  return leaf  # LayerNorm scale 1, bias 0


def init_params(rng: jax.Array, config: config_lib.PretrainingConfig, frames: int) -> tuple[Any, Any]:
  """`(student, decoder)` params drawn as upstream initialises a new model; `frames` of the fbank."""
  enc_rng, dec_rng, leaf_rng = jax.random.split(rng, 3)
  enc_cfg = config.encoder
  fbank = jnp.zeros((1, frames, enc_cfg.num_mel_bins), jnp.float32)
  student = eat.EAT(enc_cfg).init(enc_rng, fbank)["params"]
  flat = jax.tree_util.tree_flatten_with_path(student)
  keys = jax.random.split(leaf_rng, len(flat[0]))
  patch_fan_in = enc_cfg.in_chans * enc_cfg.patch_size ** 2
  leaves = [_upstream_leaf(tuple(getattr(k, "key", k) for k in path), leaf, key, patch_fan_in)
            for (path, leaf), key in zip(flat[0], keys)]
  student = jax.tree_util.tree_unflatten(flat[1], leaves)
  grid = (frames // enc_cfg.patch_size, enc_cfg.freq_patches)
  decoder = eat_decoder.Decoder(config.decoder, enc_cfg.embed_dim).init(
      dec_rng, jnp.zeros((1, *grid, enc_cfg.embed_dim), jnp.float32))["params"]
  return student, decoder


def trainable_labels(params: Any) -> Any:
  """TRAINABLE / FROZEN per leaf of `{"student", "decoder"}` for `optax.partition`."""

  def label(path, _):
    keys = tuple(getattr(k, "key", k) for k in path)
    return lora.FROZEN if keys in FROZEN_PATHS else lora.TRAINABLE

  return jax.tree_util.tree_map_with_path(label, params)


def create_state(student: Any, teacher: Any, decoder: Any, tx: optax.GradientTransformation) -> ts.TrainState:
  """Step 0 state: trained `{"student", "decoder"}`, the teacher in `extra`, all float32."""
  as_f32 = lambda tree: jax.tree.map(lambda x: jnp.array(x, jnp.float32), tree)  # noqa: E731  (own buffers)
  return ts.create_state({"student": as_f32(student), "decoder": as_f32(decoder)}, tx,
                         {"teacher": as_f32(teacher)})


def update(state: ts.TrainState, fbank: jax.Array, mask: jax.Array, mask_noise: jax.Array | None,
           dropout_rng: jax.Array | None, *, config: config_lib.PretrainingConfig,
           tx: optax.GradientTransformation, num_visible: int, dtype: Any = jnp.float32,
           schedule: optax.Schedule | None = None, labels: Any = None, replica_batch: int | None = None,
           encoder_options: dict[str, bool] | None = None) -> tuple[ts.TrainState, dict[str, jax.Array]]:
  """One update from explicit masks and mask tokens (what `make_train_step` draws): objective, AdamW, EMA.

  `replica_batch` and `encoder_options` go to the objective (`eat_pretraining_objective`).
  """
  teacher = state.extra["teacher"]

  def loss_fn(params):
    out = objective.eat_pretraining_objective(
        params["student"], teacher, params["decoder"], fbank, mask, mask_noise, config=config,
        num_visible=num_visible, dtype=dtype, train=True, dropout_rng=dropout_rng, replica_batch=replica_batch,
        **(encoder_options or {}))
    return out["loss"], out

  (_, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  rate = ema.one_minus_decay(config.ema, state.step + 1)
  new_teacher = ema.update(teacher, params["student"], rate)
  trained = grads if labels is None else jax.tree.map(lambda g, l: g if l == lora.TRAINABLE else None, grads, labels)
  metrics = {name: out[name] for name in ("loss", "loss_regression", "loss_cls", "target_var", "pred_var",
                                          "masked_pct")}
  metrics.update(ema_decay=ema.decay(config.ema, state.step) * 1000.0, model_norm=ema.tracked_norm(params["student"]),
                 ema_norm=ema.tracked_norm(new_teacher), grad_norm=optax.global_norm(trained))
  if schedule is not None:
    metrics["learning_rate"] = jnp.asarray(schedule(state.step), jnp.float32)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            extra={**state.extra, "teacher": new_teacher})
  return new_state, metrics


def make_train_step(config: config_lib.PretrainingConfig, tx: optax.GradientTransformation, *,
                    frontend: Callable[[dict[str, jax.Array]], jax.Array], frames: int, dtype: Any = jnp.float32,
                    schedule: optax.Schedule | None = None, labels: Any = None, replica_batch: int | None = None,
                    encoder_options: dict[str, bool] | None = None) -> Callable:
  """`train_step(state, batch, rng) -> (state, metrics)` over `batch = {"wav": [batch, samples], "valid_samples": [batch]}`.

  `frontend` maps the batch (`{"wav": [batch, samples], "valid_samples": [batch]}`) to `[batch, frames, 128]`
  EAT fbank; masks, mask tokens and dropout keys come
  from `fold_in(rng, state.step)`, so a resumed run draws what an uninterrupted one would.
  """
  grid = (frames // config.encoder.patch_size, config.encoder.freq_patches)
  patches = grid[0] * grid[1]
  num_visible = config.mask.num_visible(patches)
  step_update = functools.partial(update, config=config, tx=tx, num_visible=num_visible, dtype=dtype,
                                  schedule=schedule, labels=labels, replica_batch=replica_batch,
                                  encoder_options=encoder_options)

  def train_step(state: ts.TrainState, batch: dict[str, jax.Array], rng: jax.Array):
    mask_rng, noise_rng, dropout_rng = jax.random.split(jax.random.fold_in(rng, state.step), 3)
    fbank = frontend(batch)
    if fbank.shape[1] != frames:
      raise ValueError(f"the front end gives {fbank.shape[1]} frames, the step was built for {frames}")
    views = fbank.shape[0] * config.clone_batch
    mask = masking.block_mask(mask_rng, views, grid, config.mask)
    noise = config.mask_noise_std * jax.random.normal(noise_rng, (views, patches, config.encoder.embed_dim))
    return step_update(state, fbank, mask, noise, dropout_rng)

  return train_step
