"""EAT pre-training as a loss for the one train step: masks from the step's key, the objective, the EMA teacher.

Pre-training trains through the generic step (`asd_jax.training.train_step.make_train_step`), as fine-tuning
does. The state's `params = {"student": EAT params, "decoder": decoder params}` are trained (the position
table is frozen, as upstream never trains it); `extra = {"teacher": EAT params}` is the EMA teacher, float32,
updated inside the step (no host round trip, no host copy). One step:

1. `loss` (the step's `LossFn`): key = fold_in(rng, step) (the step folds it) -> block masks
   `[batch * clone_batch, patches]` (`masking.block_mask`), mask tokens N(0, mask_noise_std^2)
   `[batch * clone_batch, patches, dim]` and dropout keys; fbank of the batch's waveforms (EAT front end) ->
   `objective.eat_pretraining_objective` with the teacher from `extra`; its `loss` (summed losses / masked-patch
   count, as fairseq) is what the step differentiates;
2. the step's optimiser: clip, AdamW (`asd_jax.training.optimizer`);
3. `update_teacher` (the step's `update_extra`): teacher <- EMA towards the updated student with
   decay(step + 1) (`ema.update`).

Metrics (float32 scalars): the objective's `loss`, `loss_regression`, `loss_cls`, `target_var`, `pred_var`,
`masked_pct`; `ema_decay` as upstream logs it (decay of the teacher this step used, times 1000);
`model_norm` / `ema_norm` (norms of the EMA-tracked student / teacher tensors after the update, which upstream
logs when apex is installed); the step adds `grad_norm` (before clipping), `learning_rate` and `finite`.

`init_params` draws upstream's initialisation (fairseq's BERT init for Linear layers, Xavier for the patch
convolution, N(0, 1) CLS token, the sin-cos position table, PyTorch defaults for the decoder); the teacher
starts as a copy of the student (`create_state`).
"""

from __future__ import annotations

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
from asd_jax.training import optimizer
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
    return optimizer.FROZEN if keys in FROZEN_PATHS else optimizer.TRAINABLE

  return jax.tree_util.tree_map_with_path(label, params)


def create_state(student: Any, teacher: Any, decoder: Any, tx: optax.GradientTransformation) -> ts.TrainState:
  """Step 0 state: trained `{"student", "decoder"}`, the teacher in `extra`, all float32."""
  as_f32 = lambda tree: jax.tree.map(lambda x: jnp.array(x, jnp.float32), tree)  # noqa: E731  (own buffers)
  return ts.create_state({"student": as_f32(student), "decoder": as_f32(decoder)}, tx,
                         {"teacher": as_f32(teacher)})


METRICS = ("loss", "loss_regression", "loss_cls", "target_var", "pred_var", "masked_pct")  # of the objective


def objective_loss(params: Any, extra: Any, fbank: jax.Array, mask: jax.Array, mask_noise: jax.Array | None,
                   dropout_rng: jax.Array | None, *, config: config_lib.PretrainingConfig, num_visible: int,
                   dtype: Any = jnp.float32, replica_batch: int | None = None,
                   encoder_options: dict[str, bool] | None = None) -> tuple[jax.Array, tuple[dict, Any]]:
  """The objective's loss from explicit masks and mask tokens, as a `LossFn` returns it: `(loss, (metrics,
  extra))`, `extra` unchanged (the teacher moves in `update_teacher`). `replica_batch` and `encoder_options` go
  to the objective (`eat_pretraining_objective`)."""
  out = objective.eat_pretraining_objective(
      params["student"], extra["teacher"], params["decoder"], fbank, mask, mask_noise, config=config,
      num_visible=num_visible, dtype=dtype, train=True, dropout_rng=dropout_rng, replica_batch=replica_batch,
      **(encoder_options or {}))
  return out["loss"], ({name: out[name] for name in METRICS}, extra)


def make_loss(config: config_lib.PretrainingConfig, *, frontend: Callable[[dict[str, jax.Array]], jax.Array],
              frames: int, dtype: Any = jnp.float32, replica_batch: int | None = None,
              encoder_options: dict[str, bool] | None = None) -> ts.LossFn:
  """The step's `LossFn` over `batch = {"wav": [batch, samples], "valid_samples": [batch]}`.

  `frontend` maps the batch to `[batch, frames, 128]` EAT fbank; masks, mask tokens and dropout keys come from
  the step's key (`fold_in(rng, state.step)`), so a resumed run draws what an uninterrupted one would.
  """
  grid = (frames // config.encoder.patch_size, config.encoder.freq_patches)
  patches = grid[0] * grid[1]
  num_visible = config.mask.num_visible(patches)

  def loss(params, extra, batch, rng):
    mask_rng, noise_rng, dropout_rng = jax.random.split(rng, 3)
    fbank = frontend(batch)
    if fbank.shape[1] != frames:
      raise ValueError(f"the front end gives {fbank.shape[1]} frames, the step was built for {frames}")
    views = fbank.shape[0] * config.clone_batch
    mask = masking.block_mask(mask_rng, views, grid, config.mask)
    noise = config.mask_noise_std * jax.random.normal(noise_rng, (views, patches, config.encoder.embed_dim))
    return objective_loss(params, extra, fbank, mask, noise, dropout_rng, config=config, num_visible=num_visible,
                          dtype=dtype, replica_batch=replica_batch, encoder_options=encoder_options)

  return loss


def update_teacher(params: Any, extra: Any, step: jax.Array, *, config: config_lib.PretrainingConfig
                   ) -> tuple[Any, dict[str, jax.Array]]:
  """The step's `update_extra`: the teacher moved towards the just-updated student with decay(step + 1)
  (`step` = updates before this one), and the EMA figures upstream logs."""
  teacher = ema.update(extra["teacher"], params["student"], ema.one_minus_decay(config.ema, step + 1))
  metrics = {"ema_decay": ema.decay(config.ema, step) * 1000.0, "model_norm": ema.tracked_norm(params["student"]),
             "ema_norm": ema.tracked_norm(teacher)}
  return {**extra, "teacher": teacher}, metrics
