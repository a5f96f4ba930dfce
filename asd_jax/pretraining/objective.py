"""The EAT pre-training objective as one pure function: `eat_pretraining_objective`.

Entry point (stable; the parity tests and any outside check call exactly this):

  from asd_jax.pretraining import objective
  config, student, teacher, decoder = objective.load_fairseq_checkpoint("EAT-base_epoch30_pretrain.pt")
  out = objective.eat_pretraining_objective(student, teacher, decoder, fbank, mask, mask_noise, config=config)
  grads = jax.grad(lambda s, d: objective.eat_pretraining_objective(
      s, teacher, d, fbank, mask, mask_noise, config=config)["loss"], argnums=(0, 1))(student, decoder)

`load_fairseq_checkpoint(path)` reads an upstream pretraining `.pt` (`{"cfg", "model"}` with the `_ema`
teacher and the decoder tensors; strict: missing, extra or mis-shaped tensors are refused) and returns
`(PretrainingConfig, student params, teacher params, decoder params)`; `from_fairseq_state_dict(model,
cfg)` does the same from an in-memory `model` state_dict (torch tensors or arrays) and `cfg` dict.
Student and teacher are `asd_jax.models.eat.EAT` param trees (`_ema` -> teacher), the decoder an
`asd_jax.models.eat_decoder.Decoder` tree.

Arguments (N = batch * clones views, L = patches = (frames // 16) * 8, V visible and M masked per view):
- `fbank`: `[batch, frames, 128]` float32 (or upstream's `[batch, 1, frames, 128]`), the EAT-normalised
  log-mel (upstream's `source`), frames a multiple of 16. The patch grid, and so the decoder's
  `[frames // 16, 8]` layout, follows from `frames` (upstream's decoder takes it from `target_length`,
  so there the two must agree).
- `mask`: upstream's `precomputed_mask` convention: `[batch * clones, L]` (or `[batch, clones, L]`), bool or
  0/1 of any dtype, **nonzero / True = masked**; rows are clip-major (row `b * clones + c` is view c of clip b,
  as `repeat_interleave` orders them); every row masks the same number M of patches. clones = rows / batch.
- `mask_noise`: the mask tokens, `[batch * clones, L, dim]` float32 (or `[batch, clones, L, dim]`): the
  decoder input at masked patch p of view i is `mask_noise[i, p]` (values at visible patches are ignored).
  Upstream draws N(0, 0.01^2) per masked patch; None means zeros (upstream with `mask_noise_std=0`).
- `num_visible`: V, static. None reads it from `mask`, which must then be concrete (not traced under jit).
- `config`: `PretrainingConfig` (targets and loss settings, encoder and decoder sizes).
- `dtype`: compute dtype of encoder and decoder (float32, or bfloat16 on accelerators); params stay
  float32, targets and losses are computed in float32.
- `train`, `dropout_rng`: student dropout / drop path (all rates are 0 in EAT's configs); the teacher always
  runs deterministic.
- `replica_batch`: clips per upstream GPU whose data-parallel loss normalisation to reproduce (step 6);
  None = one replica. `fused_attention`, `remat`, `conv_impl`: fast paths with the same maths.

Computation (upstream `Data2VecMultiModel.forward` with EAT's settings):
1. Teacher (no gradient): the full encoder on the unmasked fbank; per block its MLP output before the
   residual ("FFN targets"; the block output with `end_of_block_targets`), CLS dropped, in float32; the last
   K = `average_top_k_layers` are each normalised as `config.targets` says (EAT: instance norm over patches,
   eps 1e-5, no affine), averaged, and the average normalised again (EAT: layer norm over channels)
   -> `targets [batch, L, dim]` (`make_targets`).
2. Student: patch embedding + positions of the clip, then per view only its V visible patches (ascending
   patch order) behind the CLS token, pre-norm and all blocks -> `[N, 1 + V, dim]`.
3. Decoder: the visible outputs at their patches, `mask_noise` at masked ones, on the `[frames // 16, 8]`
   grid -> `decoder_predictions [N, L, dim]`.
4. Frame loss: squared error (smooth L1 if `loss_beta`) times `loss_scale` (default 1 / sqrt(dim)) between
   predictions and the clip's targets, summed over masked patches and channels -> `regression_sum`
   (upstream `losses["IMAGE_regression"].sum()`, times `d2v_loss`).
5. Utterance loss: the same error between the student's CLS output and the mean of the clip's patch
   targets (`cls_target`), summed over views and channels, times `cls_loss * sample_size` -> `cls_sum`
   (upstream `losses["cls"].sum()`). sample_size = N * M, the number of masked patches.
6. fairseq divides the summed losses (and so the gradients) by sample_size:
   `loss = (regression_sum + cls_sum) / sample_size`; that is what the train step differentiates.
   `replica_batch` (default None: the whole batch is one replica, as upstream on one process) reproduces
   upstream's data-parallel training, where each of the W = batch / replica_batch GPUs scales its CLS loss
   by its own sample_size but the sum is divided by the global one: `cls_sum` is then divided by W.

Returned dict (all float32; scalars are 0-d arrays):
- `loss`, `loss_regression` (= regression_sum / sample_size, upstream's logged `loss_IMAGE_regression`),
  `loss_cls` (= cls_sum / sample_size, logged `loss_cls`), `regression_sum`, `cls_sum`, `sample_size`;
- `targets [batch, L, dim]`, `cls_target [batch, dim]`, `targets_masked [N, M, dim]` (the targets of each
  view's masked patches, ascending patch order, = upstream `y[mask]` reshaped);
- `student_cls [N, dim]`, `student_visible [N, V, dim]` (ascending patch order), `visible_index [N, V]` and
  `masked_index [N, M]` int32 (the patch numbers);
- `decoder_predictions [N, L, dim]` (every patch), `predictions_masked [N, M, dim]` (= upstream `xs[0][mask]`);
- logged figures as upstream computes them: `target_var`, `pred_var` (per channel
  sqrt(unbiased variance over all masked patches + 1e-6), averaged over channels, of `targets_masked` and
  `predictions_masked`) and `masked_pct` (= 1 - V / L). The EMA decay is logged by the train step.

The teacher's EMA update (upstream `set_num_updates(n)`, n >= 1, towards the student after update n) is
`asd_jax.pretraining.ema.update(teacher, student, ema.one_minus_decay(config.ema, n))`: every tensor
`teacher * decay(n) + student * (1 - decay(n))` in float32, the position table copied from the student.
An upstream pretraining model's own `state_dict()` (which holds `_ema`) and `{"model": cfg}` go through
`from_fairseq_state_dict`; `eat.to_fairseq_state_dict` maps encoder trees (or their gradients) back to
fairseq names and PyTorch layouts, `eat_decoder.to_state_dict` the decoder's.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from asd_jax.models import eat
from asd_jax.models import eat_decoder
from asd_jax.pretraining import config as config_lib

PretrainingConfig = config_lib.PretrainingConfig
NORM_EPS = 1e-5  # PyTorch's instance/batch/layer norm default, which upstream's targets use
VAR_EPS = 1e-6  # upstream's compute_var


class PretrainingParams(NamedTuple):
  """`(config, student, teacher, decoder)` of a pre-training checkpoint."""

  config: PretrainingConfig
  student: Any
  teacher: Any
  decoder: Any


def _pretraining_params(loaded: eat.FairseqPretraining) -> PretrainingParams:
  config = PretrainingConfig.from_fairseq_cfg(loaded.cfg)
  config = dataclasses.replace(config, encoder=loaded.config)  # max_positions as the tensors have it
  return PretrainingParams(config, loaded.student, loaded.teacher, loaded.decoder)


def load_fairseq_checkpoint(path: str) -> PretrainingParams:
  """`(config, student, teacher, decoder)` from an upstream EAT pretraining `.pt` (strict; see module doc)."""
  return _pretraining_params(eat.load_fairseq_pretraining(path))


def from_fairseq_state_dict(state_dict: Any, cfg: Any, source: str = "fairseq state_dict") -> PretrainingParams:
  """`(config, student, teacher, decoder)` from a fairseq `model` state_dict (with `_ema`) and its `cfg`."""
  encoder = eat.EATConfig.from_fairseq_cfg(cfg)
  positions = state_dict[eat.FAIRSEQ_PREFIX + "fixed_positional_encoder.positions"]
  encoder = dataclasses.replace(encoder, max_positions=int(positions.shape[1]))
  return _pretraining_params(eat.convert_fairseq_pretraining(state_dict, cfg, encoder, source))


# ---------------------------------------------------------------------------------------------------------
# Pieces (each a pure function of arrays).


def _instance_norm(x: jax.Array, axis) -> jax.Array:
  mean = jnp.mean(x, axis=axis, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=axis, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + NORM_EPS)


def make_targets(layer_results: list[jax.Array], targets: config_lib.TargetConfig) -> jax.Array:
  """`[batch, L, dim]` float32 targets from the teacher's per-block outputs (`[batch, L, dim]` each, CLS
  removed): the last K blocks, normalised per block as configured, averaged, then normalised again."""
  layers = [jnp.asarray(y, jnp.float32) for y in layer_results[-targets.average_top_k_layers:]]
  if targets.batch_norm_target_layer:
    layers = [_instance_norm(y, (0, 1)) for y in layers]  # per channel over clips and patches
  if targets.instance_norm_target_layer:
    layers = [_instance_norm(y, 1) for y in layers]  # per clip and channel over patches
  if targets.layer_norm_target_layer:
    layers = [_instance_norm(y, -1) for y in layers]  # per patch over channels
  y = layers[0]
  for layer in layers[1:]:
    y = y + layer
  y = y / len(layers)
  if targets.layer_norm_targets:
    y = _instance_norm(y, -1)
  if targets.instance_norm_targets:
    y = _instance_norm(y, 1)
  return y


def regression_error(prediction: jax.Array, target: jax.Array, targets: config_lib.TargetConfig) -> jax.Array:
  """Elementwise scaled error (upstream `d2v_loss`): squared (or smooth L1) times `loss_scale` or 1/sqrt(dim)."""
  diff = prediction.astype(jnp.float32) - target.astype(jnp.float32)
  if targets.loss_beta == 0:
    error = jnp.square(diff)
  else:
    beta = targets.loss_beta
    error = jnp.where(jnp.abs(diff) < beta, 0.5 * jnp.square(diff) / beta, jnp.abs(diff) - 0.5 * beta)
  scale = targets.loss_scale if targets.loss_scale is not None else 1.0 / math.sqrt(prediction.shape[-1])
  return error * scale


def compute_var(y: jax.Array) -> jax.Array:
  """Upstream's logged spread: mean over channels of sqrt(unbiased variance over rows + 1e-6); `y [..., dim]`."""
  y = y.reshape(-1, y.shape[-1]).astype(jnp.float32)
  mean = jnp.mean(y, axis=0)
  var = jnp.sum(jnp.square(y - mean), axis=0) / (y.shape[0] - 1)
  return jnp.mean(jnp.sqrt(var + VAR_EPS))


def mask_indices(mask: jax.Array, num_visible: int) -> tuple[jax.Array, jax.Array]:
  """`(visible [N, V], masked [N, M])` int32 patch numbers of a `[N, L]` bool mask, each ascending."""
  order = jnp.argsort(mask.astype(jnp.int32), axis=1, stable=True).astype(jnp.int32)
  return order[:, :num_visible], order[:, num_visible:]


def _as_rows(x: jax.Array | np.ndarray, batch: int, patches: int, name: str, trailing: tuple[int, ...] = ()):
  """`x` as `[batch * clones, patches, *trailing]` (accepting `[batch, clones, patches, ...]`)."""
  shape = tuple(x.shape)
  if len(shape) == 3 + len(trailing) and shape[0] == batch:
    x = x.reshape((shape[0] * shape[1],) + shape[2:])
    shape = tuple(x.shape)
  if len(shape) != 2 + len(trailing) or shape[1:] != (patches,) + trailing or shape[0] % batch or shape[0] == 0:
    raise ValueError(f"{name} must be [batch * clones, {patches}{''.join(f', {t}' for t in trailing)}] "
                     f"(batch {batch}), got {tuple(x.shape)}")
  return x


def _concrete_visible(mask: Any, patches: int) -> int:
  try:
    rows = np.asarray(mask) != 0
  except jax.errors.TracerArrayConversionError as e:
    raise ValueError("num_visible is needed when the mask is traced (under jit): pass num_visible="
                     "config.mask.num_visible(patches)") from e
  masked = rows.sum(axis=1)
  if np.any(masked != masked[0]):
    raise ValueError(f"every view must mask the same number of patches; found counts {sorted(set(masked.tolist()))}")
  return int(patches - masked[0])


def eat_pretraining_objective(student: Any, teacher: Any, decoder: Any, fbank: jax.Array, mask: jax.Array,
                              mask_noise: jax.Array | None = None, *, config: PretrainingConfig,
                              num_visible: int | None = None, dtype: Any = jnp.float32, train: bool = False,
                              dropout_rng: jax.Array | None = None, replica_batch: int | None = None,
                              fused_attention: bool = False, remat: bool = False,
                              conv_impl: str = "auto") -> dict[str, jax.Array]:
  """EAT's pre-training losses, targets and predictions for explicit masks; see the module docstring."""
  if fbank.ndim == 4:
    if fbank.shape[1] != 1:
      raise ValueError(f"fbank [batch, 1, frames, mel] must have one channel, got {fbank.shape}")
    fbank = fbank[:, 0]
  enc_cfg = config.encoder
  batch, frames, _ = fbank.shape
  grid = (frames // enc_cfg.patch_size, enc_cfg.freq_patches)
  patches = grid[0] * grid[1]
  mask = _as_rows(mask, batch, patches, "mask")
  if num_visible is None:
    num_visible = _concrete_visible(mask, patches)
  if not 0 < num_visible < patches:
    raise ValueError(f"num_visible must be in (0, {patches}), got {num_visible}")
  views = mask.shape[0]
  clones = views // batch
  if replica_batch is not None and (replica_batch < 1 or batch % replica_batch):
    raise ValueError(f"replica_batch {replica_batch} does not divide the batch of {batch} clips")
  replicas = 1 if replica_batch is None else batch // replica_batch
  dim = enc_cfg.embed_dim
  masked = mask != 0
  visible_index, masked_index = mask_indices(masked, num_visible)
  encoder = eat.EAT(enc_cfg, dtype, fused_attention=fused_attention, remat=remat)
  fbank = jnp.asarray(fbank, jnp.float32)

  # 1. Teacher targets from the unmasked clip.
  out, state = encoder.apply({"params": teacher}, fbank, mutable=["intermediates"])
  per_block = out.layer_outputs if config.targets.end_of_block_targets else state["intermediates"]["ffn_outputs"]
  extra = enc_cfg.num_extra_tokens
  targets = jax.lax.stop_gradient(make_targets([y[:, extra:] for y in per_block], config.targets))

  # 2. Student on each view's visible patches.
  rngs = {"dropout": dropout_rng} if dropout_rng is not None else {}
  x = encoder.apply({"params": student}, fbank, train=train, visible=visible_index.reshape(batch, clones, -1),
                    rngs=rngs).layer_outputs[-1]
  student_cls, student_visible = x[:, extra - 1], x[:, extra:]

  # 3. Decoder on the grid: visible outputs at their patches, mask tokens elsewhere.
  rows = jnp.arange(views)[:, None]
  placed = jnp.zeros((views, patches, dim), x.dtype).at[rows, visible_index].set(student_visible)
  noise = (jnp.zeros((views, patches, dim), x.dtype) if mask_noise is None
           else _as_rows(jnp.asarray(mask_noise), batch, patches, "mask_noise", (dim,)).astype(x.dtype))
  decoder_input = jnp.where(masked[..., None], noise, placed).reshape(views, *grid, dim)
  predictions = eat_decoder.Decoder(config.decoder, dim, dtype, conv_impl).apply({"params": decoder}, decoder_input)
  predictions = predictions.reshape(views, patches, dim).astype(jnp.float32)

  # 4-6. Losses on the masked patches and the CLS token, normalised by the masked-patch count.
  clip_of_view = rows // clones
  predictions_masked = jnp.take_along_axis(predictions, masked_index[..., None], axis=1)
  targets_masked = targets[clip_of_view, masked_index]
  sample_size = float(views * (patches - num_visible))
  regression_sum = jnp.sum(regression_error(predictions_masked, targets_masked, config.targets))
  regression_sum = regression_sum * config.targets.d2v_loss
  cls_target = jnp.mean(targets, axis=1)
  loss_cls = config.targets.cls_loss / replicas * jnp.sum(
      regression_error(student_cls, cls_target[clip_of_view[:, 0]], config.targets))
  loss_regression = regression_sum / sample_size
  return {
      "loss": loss_regression + loss_cls,
      "loss_regression": loss_regression,
      "loss_cls": loss_cls,
      "regression_sum": regression_sum,
      "cls_sum": loss_cls * sample_size,
      "sample_size": jnp.asarray(sample_size, jnp.float32),
      "targets": targets,
      "cls_target": cls_target,
      "targets_masked": targets_masked,
      "student_cls": student_cls.astype(jnp.float32),
      "student_visible": student_visible.astype(jnp.float32),
      "visible_index": visible_index,
      "masked_index": masked_index,
      "decoder_predictions": predictions,
      "predictions_masked": predictions_masked,
      "target_var": compute_var(jax.lax.stop_gradient(targets_masked)),
      "pred_var": compute_var(jax.lax.stop_gradient(predictions_masked)),
      "masked_pct": jnp.asarray(1.0 - num_visible / patches, jnp.float32),
  }
