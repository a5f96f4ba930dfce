"""BEATs audio encoder (Chen et al., 2022) in Flax linen, with loading of the released PyTorch checkpoints.

The network follows microsoft/unilm `beats/` exactly at inference: a 16x16 patch convolution over the
normalised Kaldi fbank (tokens time-major, 8 frequency patches per time step), LayerNorm and a projection to
the model width, a grouped convolutional position embedding with weight norm, then post-LN transformer layers
with DeepNorm residual scaling and a gated relative-position bias whose bucket table is owned by layer 0 and
shared by every layer. Training-only behaviour (dropouts, layerdrop, the layer-wise gradient-decay multiplier)
is implemented too, so fine-tuning is faithful.

Parameters are a plain float32 pytree. Attention projections are Dense modules named `q_proj`, `k_proj`,
`v_proj`, `out_proj` (kernel `[in, out]`), so LoRA can select them by path. The positional convolution keeps
the weight-norm factors `weight_g` / `weight_v` as parameters (the effective kernel is computed in the forward
pass), which is what the PyTorch model trains. `convert_state_dict` maps a PyTorch state_dict onto this tree
strictly; `load` returns `(config, params)` from a converted directory or a `.pt` file.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import math
import os
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from asd_jax.checkpoints import converted
from asd_jax.models import attention
from asd_jax.models.encoder_output import EncoderOutput

MODEL_NAME = "beats"
LAYER_NORM_EPS = 1e-5
NUM_MEL_BINS = 128


@dataclasses.dataclass(frozen=True)
class BEATsConfig:
  """The BEATs checkpoint config (`ckpt["cfg"]`); defaults are the released BEATs_iter3+ values.

  Note that upstream's own `BEATsConfig` class has different defaults (e.g. max_distance 1280): build
  configs from a checkpoint with `from_checkpoint_cfg`, which fills absent keys with upstream's defaults.
  """

  encoder_layers: int = 12
  encoder_embed_dim: int = 768
  encoder_ffn_embed_dim: int = 3072
  encoder_attention_heads: int = 12
  activation_fn: str = "gelu"
  dropout: float = 0.0
  attention_dropout: float = 0.0
  activation_dropout: float = 0.0
  encoder_layerdrop: float = 0.05
  dropout_input: float = 0.0
  layer_norm_first: bool = False
  conv_bias: bool = False
  conv_pos: int = 128
  conv_pos_groups: int = 16
  relative_position_embedding: bool = True
  num_buckets: int = 320
  max_distance: int = 800
  gru_rel_pos: bool = True
  deep_norm: bool = True
  input_patch_size: int = 16
  layer_wise_gradient_decay_ratio: float = 0.6
  embed_dim: int = 512
  finetuned_model: bool = False
  # Only used by fine-tuned (AudioSet classifier) checkpoints.
  predictor_dropout: float = 0.1
  predictor_class: int = 527

  def __post_init__(self):
    if self.encoder_embed_dim % self.encoder_attention_heads:
      raise ValueError(f"encoder_embed_dim {self.encoder_embed_dim} is not divisible by "
                       f"encoder_attention_heads {self.encoder_attention_heads}")
    if self.activation_fn not in _ACTIVATIONS:
      raise ValueError(f"activation_fn {self.activation_fn!r} is not supported; expected one of "
                       f"{sorted(_ACTIVATIONS)}")
    if self.input_patch_size < 1:
      raise ValueError(f"input_patch_size must be positive, got {self.input_patch_size}")
    if self.deep_norm and self.layer_norm_first:
      raise ValueError("deep_norm and layer_norm_first cannot both be set (as upstream asserts)")

  @property
  def head_dim(self) -> int:
    return self.encoder_embed_dim // self.encoder_attention_heads

  @property
  def deep_norm_alpha(self) -> float:
    """Residual scale of post-LN DeepNorm, (2 L) ** (1/4); 1 without deep_norm."""
    return (2 * self.encoder_layers) ** 0.25 if self.deep_norm else 1.0

  @classmethod
  def from_checkpoint_cfg(cls, cfg: collections.abc.Mapping[str, Any]) -> BEATsConfig:
    """Config from a checkpoint's `cfg` dict; absent keys take upstream's class defaults, unknown keys are
    ignored with a warning (upstream copies them onto its config object and never reads them)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(cfg) - fields)
    if unknown:
      logging.warning("BEATs cfg keys not used by this model: %s", unknown)
    absent = sorted(fields - set(cfg))
    if absent:
      logging.info("BEATs cfg lacks %s; using upstream defaults", absent)
    values = {**_UPSTREAM_CLASS_DEFAULTS, **{k: v for k, v in cfg.items() if k in fields}}
    return cls(**values)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


# Defaults of upstream's `BEATsConfig` class, used for keys a checkpoint cfg doesn't carry.
_UPSTREAM_CLASS_DEFAULTS = dict(
    input_patch_size=-1, embed_dim=512, conv_bias=False, encoder_layers=12, encoder_embed_dim=768,
    encoder_ffn_embed_dim=3072, encoder_attention_heads=12, activation_fn="gelu",
    layer_wise_gradient_decay_ratio=1.0, layer_norm_first=False, deep_norm=False, dropout=0.1,
    attention_dropout=0.1, activation_dropout=0.0, encoder_layerdrop=0.0, dropout_input=0.0, conv_pos=128,
    conv_pos_groups=16, relative_position_embedding=False, num_buckets=320, max_distance=1280,
    gru_rel_pos=False, finetuned_model=False, predictor_dropout=0.1, predictor_class=527)

_ACTIVATIONS = {
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "gelu_accurate": lambda x: nn.gelu(x, approximate=True),
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "linear": lambda x: x,
}

# cfg keys a BEATs checkpoint must have: the layout of the network (every released checkpoint has them).
_REQUIRED_CFG_KEYS = ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads",
                      "input_patch_size", "embed_dim")

BEATS_ITER3_PLUS = BEATsConfig()
# Same layout as the released model at demo size (the `beats_tiny.pt` fixture's cfg).
BEATS_TINY = BEATsConfig(encoder_layers=2, encoder_embed_dim=64, encoder_ffn_embed_dim=128,
                         encoder_attention_heads=4, embed_dim=32)


# ------------------------------------------------------------------------------------------ helpers


@jax.custom_vjp
def _scale_gradient(x: jax.Array, scale: float) -> jax.Array:
  """Identity in the forward pass; multiplies the incoming gradient by `scale` (fairseq GradMultiply)."""
  del scale
  return x


def _scale_gradient_fwd(x, scale):
  return x, scale


def _scale_gradient_bwd(scale, g):
  return g * scale, None


_scale_gradient.defvjp(_scale_gradient_fwd, _scale_gradient_bwd)


def relative_position_buckets(num_tokens: int, num_buckets: int, max_distance: int) -> np.ndarray:
  """Bucket index `[query, key]` (int32) of rel = key - query, bidirectional T5-style, as upstream.

  Half the buckets are for rel > 0. Within a half, |rel| < num_buckets / 4 gets its own bucket, larger
  distances share log-spaced buckets up to max_distance (computed in float32 like the PyTorch code).
  """
  half = num_buckets // 2
  max_exact = half // 2
  position = np.arange(num_tokens, dtype=np.int64)
  rel = position[None, :] - position[:, None]
  buckets = (rel > 0).astype(np.int64) * half
  distance = np.abs(rel)
  # Distances below max_exact use the exact branch; clamp them so the unused log stays finite.
  log_ratio = np.log(np.maximum(distance, max_exact).astype(np.float32) / np.float32(max_exact))
  large = max_exact + (log_ratio / np.float32(math.log(max_distance / max_exact))
                       * np.float32(half - max_exact)).astype(np.int64, copy=False)
  large = np.minimum(large, half - 1)
  buckets += np.where(distance < max_exact, distance, large)
  return buckets.astype(np.int32)


def token_padding_mask(frame_padding_mask: jax.Array, num_tokens: int) -> jax.Array:
  """Patch-level padding `[batch, tokens]` from frame-level padding `[batch, frames]` (True = padded).

  Same rule as upstream `forward_padding_mask`: drop the last `frames % tokens` frames, split the rest into
  `tokens` equal consecutive groups, and call a token padded when its whole group is. For end padding this
  marks (up to rounding at the boundary) the tokens of the padded time patches.
  """
  num_frames = frame_padding_mask.shape[1]
  usable = num_frames - num_frames % num_tokens
  grouped = frame_padding_mask[:, :usable].reshape(frame_padding_mask.shape[0], num_tokens, -1)
  return jnp.all(grouped, axis=-1)


def frame_padding_mask(sample_padding_mask: jax.Array, num_frames: int) -> jax.Array:
  """Frame-level padding `[batch, frames]` from sample-level padding `[batch, samples]` (True = padded),
  by upstream's rule (the same grouping as `token_padding_mask`, applied to samples)."""
  return token_padding_mask(sample_padding_mask, num_frames)


def _fft_size(n: int) -> int:
  """Smallest integer >= n with no prime factor above 5 (a fast FFT length)."""
  while True:
    rest = n
    for p in (2, 3, 5):
      while rest % p == 0:
        rest //= p
    if rest == 1:
      return n
    n += 1


def _conv_xla(x: jax.Array, kernel: jax.Array, groups: int) -> jax.Array:
  pad = kernel.shape[0] // 2
  return jax.lax.conv_general_dilated(x, kernel, window_strides=(1,), padding=[(pad, pad)],
                                      dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=groups)


def _conv_split(x: jax.Array, kernel: jax.Array, groups: int) -> jax.Array:
  pieces = zip(jnp.split(x, groups, axis=-1), jnp.split(kernel, groups, axis=-1))
  return jnp.concatenate([_conv_xla(xg, kg, 1) for xg, kg in pieces], axis=-1)


def _conv_fft(x: jax.Array, kernel: jax.Array, groups: int) -> jax.Array:
  """The same convolution as a product of real FFTs over time, computed in float32.

  With the kernel flipped, output step t is entry t + taps - 1 - pad of the linear convolution; a circular
  convolution of length n >= steps + pad leaves those entries free of wrap-around.
  """
  batch, steps, channels = x.shape
  taps, in_per_group, out = kernel.shape
  out_per_group, pad = out // groups, taps // 2
  out_steps = steps + 2 * pad - taps + 1
  n = _fft_size(max(steps + pad, taps))
  xt = x.astype(jnp.float32).reshape(batch, steps, groups, in_per_group).transpose(0, 2, 3, 1)  # [b, g, i, t]
  kt = jnp.flip(kernel.astype(jnp.float32), 0).reshape(taps, in_per_group, groups, out_per_group)
  kt = kt.transpose(2, 1, 3, 0)  # [g, i, o, tap]
  spectrum = jnp.einsum("bgif,giof->bgof", jnp.fft.rfft(xt, n=n), jnp.fft.rfft(kt, n=n))
  y = jnp.fft.irfft(spectrum, n=n)[..., taps - 1 - pad:taps - 1 - pad + out_steps]  # [b, g, o, t]
  return y.transpose(0, 3, 1, 2).reshape(batch, out_steps, out).astype(x.dtype)


def _with_fft_grad(forward):
  """`forward` with its gradients computed through `_conv_fft` (the same sums)."""

  @functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
  def conv(x: jax.Array, kernel: jax.Array, groups: int) -> jax.Array:
    return forward(x, kernel, groups)

  def conv_fwd(x, kernel, groups):
    return forward(x, kernel, groups), (x, kernel)

  def conv_bwd(groups, residuals, g):
    _, vjp = jax.vjp(lambda x, kernel: _conv_fft(x, kernel, groups), *residuals)
    return vjp(g)

  conv.defvjp(conv_fwd, conv_bwd)
  return conv


_CONV_IMPLS = {"xla": _conv_xla, "split": _conv_split, "fft": _conv_fft,
               "split_fft_grad": _with_fft_grad(_conv_split), "xla_fft_grad": _with_fft_grad(_conv_xla)}


def default_conv_impl(steps: int, taps: int, groups: int, backend: str | None = None) -> str:
  """The `grouped_conv1d` implementation used by default (see there) for this shape on `backend`."""
  if (backend or jax.default_backend()) != "cpu" or groups == 1:
    return "xla"
  return "split_fft_grad" if steps >= taps else "xla_fft_grad"


def grouped_conv1d(x: jax.Array, kernel: jax.Array, groups: int, impl: str | None = None) -> jax.Array:
  """Grouped 1-D convolution, padding `kernel // 2` on both sides: `x: [batch, steps, in]`,
  `kernel: [taps, in / groups, out]` -> `[batch, steps + 1 - taps % 2, out]`.

  All implementations compute the same sums. "xla": XLA's grouped convolution. "split": one dense
  convolution per group. "fft": real FFTs over time (float32; differences ~1e-6). "split_fft_grad" and
  "xla_fft_grad": that forward, gradients through the FFT form. None picks, on CPU, "split_fft_grad" when
  there are at least as many steps as taps and "xla_fft_grad" otherwise, and "xla" on other backends. At
  BEATs' size (768 channels, 16 groups, 128 taps) on CPU, XLA's grouped convolution is 1.2-1.5x slower
  forward than "split" from 128 steps up (a 10 s clip has 496), while "split" is 6-25x slower than XLA's
  below 128 steps (short clips); XLA's gradient is 10-40x slower than the FFT's (seconds per clip).
  """
  if impl is None:
    impl = default_conv_impl(x.shape[1], kernel.shape[0], groups)
  if impl not in _CONV_IMPLS:
    raise ValueError(f"unknown grouped convolution impl {impl!r}; expected one of {sorted(_CONV_IMPLS)}")
  return _CONV_IMPLS[impl](x, kernel, groups)


# ------------------------------------------------------------------------------------------ modules


class WeightNormConv1D(nn.Module):
  """Grouped 1-D convolution `[batch, steps, dim] -> [batch, steps, dim]` with weight norm over the taps.

  Effective kernel `[kernel, dim / groups, dim]`: `weight_g[k] * weight_v[k] / ||weight_v[k]||_F` (the norm over
  input and output channels per tap, PyTorch `weight_norm(dim=2)`). Padding `kernel // 2` on both sides; for
  an even kernel the extra last step is dropped (upstream `SamePad`).
  """

  features: int
  kernel_size: int
  groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_per_group = x.shape[-1] // self.groups
    std = math.sqrt(4.0 / (self.kernel_size * self.features))
    weight_v = self.param("weight_v", nn.initializers.normal(std),
                          (self.kernel_size, in_per_group, self.features), jnp.float32)
    weight_g = self.param("weight_g", lambda _, shape: jnp.sqrt(jnp.sum(jnp.square(weight_v), axis=(1, 2))),
                          (self.kernel_size,))
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    norm = jnp.sqrt(jnp.sum(jnp.square(weight_v), axis=(1, 2), keepdims=True))
    kernel = (weight_g[:, None, None] / norm) * weight_v
    y = grouped_conv1d(x.astype(self.dtype), kernel.astype(self.dtype), self.groups)
    if self.kernel_size % 2 == 0:
      y = y[:, :-1]
    return y + bias.astype(self.dtype)


class MultiHeadAttention(nn.Module):
  """BEATs self-attention with the gated relative-position bias.

  `position_bias: [heads, query, key]` (ungated) is passed in; the layer that owns the bucket table (layer 0)
  computes it when given None. Returns `(output [batch, tokens, dim], position_bias)`. `fused` uses
  `attention.fused_attention` (same maths; cuDNN flash attention on NVIDIA GPUs in bf16) instead of the
  explicit einsum/softmax reference path, except in training with attention dropout, which it cannot apply.
  """

  config: BEATsConfig
  has_bias_table: bool = False
  dtype: Any = jnp.float32
  fused: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, key_padding_mask: jax.Array | None, position_bias: jax.Array | None,
               *, train: bool) -> tuple[jax.Array, jax.Array | None]:
    cfg = self.config
    heads, head_dim = cfg.encoder_attention_heads, cfg.head_dim
    batch, tokens, dim = x.shape
    dense = lambda name: nn.Dense(dim, dtype=self.dtype, param_dtype=jnp.float32, name=name)
    q = dense("q_proj")(x).reshape(batch, tokens, heads, head_dim)
    k = dense("k_proj")(x).reshape(batch, tokens, heads, head_dim)
    v = dense("v_proj")(x).reshape(batch, tokens, heads, head_dim)

    if cfg.relative_position_embedding and position_bias is None:
      if not self.has_bias_table:
        raise ValueError("relative position bias requested but no layer owns the bucket table")
      table = nn.Embed(cfg.num_buckets, heads, param_dtype=jnp.float32, name="relative_attention_bias")
      buckets = relative_position_buckets(tokens, cfg.num_buckets, cfg.max_distance)
      position_bias = jnp.transpose(table(jnp.asarray(buckets)), (2, 0, 1))  # [heads, query, key]

    bias = None  # gated relative-position bias, [batch or 1, heads, query, key] float32
    if position_bias is not None:
      bias = position_bias[None].astype(jnp.float32)
    if cfg.gru_rel_pos:  # Upstream owns the gate parameters whenever gru_rel_pos is set, used or not.
      gate_logits = nn.Dense(8, dtype=self.dtype, param_dtype=jnp.float32, name="grep_linear")(q)
      gate_logits = gate_logits.astype(jnp.float32).reshape(batch, tokens, heads, 2, 4).sum(-1)
      gate_a, gate_b = jnp.split(jax.nn.sigmoid(gate_logits), 2, axis=-1)  # [batch, query, heads, 1]
      grep_a = self.param("grep_a", nn.initializers.ones, (heads,), jnp.float32)
      gate = gate_a[..., 0] * (gate_b[..., 0] * grep_a - 1.0) + 2.0  # [batch, query, heads]
      if bias is not None:
        bias = jnp.transpose(gate, (0, 2, 1))[..., None] * bias
    if self.fused and not (train and cfg.attention_dropout > 0):
      mask = None if key_padding_mask is None else jnp.logical_not(key_padding_mask)[:, None, None, :]
      bias = None if bias is None else bias.astype(self.dtype)
      out = attention.fused_attention(q, k, v, bias=bias, mask=mask, scale=head_dim**-0.5)
      return dense("out_proj")(out.reshape(batch, tokens, dim)), position_bias
    logits = attention.attention_logits(q, k, head_dim**-0.5).astype(jnp.float32)
    if bias is not None:
      logits = logits + bias
    if key_padding_mask is not None:
      logits = jnp.where(key_padding_mask[:, None, None, :], -jnp.inf, logits)
    weights = jax.nn.softmax(logits, axis=-1)  # float32
    weights = nn.Dropout(cfg.attention_dropout, deterministic=not train)(weights)
    out = attention.attend(weights.astype(self.dtype), v).reshape(batch, tokens, dim)
    return dense("out_proj")(out), position_bias


class EncoderLayer(nn.Module):
  """One transformer layer: post-LN with DeepNorm residual scale (or pre-LN if `layer_norm_first`)."""

  config: BEATsConfig
  has_bias_table: bool = False
  dtype: Any = jnp.float32
  fused_attention: bool = False

  @nn.compact
  def __call__(self, x, key_padding_mask, position_bias, train: bool):  # train positional: static under remat
    cfg = self.config
    dropout = lambda rate: nn.Dropout(rate, deterministic=not train)
    norm = lambda name: nn.LayerNorm(LAYER_NORM_EPS, dtype=self.dtype, param_dtype=jnp.float32, name=name)
    attention = MultiHeadAttention(cfg, self.has_bias_table, self.dtype, self.fused_attention, name="self_attn")
    fc1 = nn.Dense(cfg.encoder_ffn_embed_dim, dtype=self.dtype, param_dtype=jnp.float32, name="fc1")
    fc2 = nn.Dense(cfg.encoder_embed_dim, dtype=self.dtype, param_dtype=jnp.float32, name="fc2")
    activation = _ACTIVATIONS[cfg.activation_fn]

    def feed_forward(h):
      h = dropout(cfg.activation_dropout)(activation(fc1(h)))
      return dropout(cfg.dropout)(fc2(h))

    if cfg.layer_norm_first:
      h, position_bias = attention(norm("self_attn_layer_norm")(x), key_padding_mask, position_bias, train=train)
      x = x + dropout(cfg.dropout)(h)
      x = x + feed_forward(norm("final_layer_norm")(x))
    else:
      alpha = cfg.deep_norm_alpha
      h, position_bias = attention(x, key_padding_mask, position_bias, train=train)
      x = norm("self_attn_layer_norm")(alpha * x + dropout(cfg.dropout)(h))
      x = norm("final_layer_norm")(alpha * x + feed_forward(x))
    return x, position_bias


class TransformerEncoder(nn.Module):
  """Convolutional position embedding, then the layers. Returns every layer's output `[batch, tokens, dim]`.

  `remat` recomputes each layer's activations in the backward pass instead of storing them (`nn.remat`).
  """

  config: BEATsConfig
  dtype: Any = jnp.float32
  fused_attention: bool = False
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, padding_mask: jax.Array | None, *, train: bool) -> tuple[jax.Array, ...]:
    cfg = self.config
    if padding_mask is not None:
      x = jnp.where(padding_mask[..., None], 0.0, x)
    pos = WeightNormConv1D(cfg.encoder_embed_dim, cfg.conv_pos, cfg.conv_pos_groups, self.dtype, name="pos_conv")
    x = x + nn.gelu(pos(x), approximate=False)
    norm = nn.LayerNorm(LAYER_NORM_EPS, dtype=self.dtype, param_dtype=jnp.float32, name="layer_norm")
    if not cfg.layer_norm_first:
      x = norm(x)
    x = nn.Dropout(cfg.dropout, deterministic=not train)(x)
    self.sow("intermediates", "encoder_input", x)

    layer_type = nn.remat(EncoderLayer, static_argnums=(4,)) if self.remat else EncoderLayer
    outputs = []
    position_bias = None
    for i in range(cfg.encoder_layers):
      if cfg.layer_wise_gradient_decay_ratio != 1.0:
        x = _scale_gradient(x, cfg.layer_wise_gradient_decay_ratio)
      layer = layer_type(cfg, has_bias_table=(i == 0), dtype=self.dtype, fused_attention=self.fused_attention,
                         name=f"layers_{i}")
      y, position_bias = layer(x, padding_mask, position_bias, train)
      if train and cfg.encoder_layerdrop > 0:
        keep = jax.random.uniform(self.make_rng("dropout")) > cfg.encoder_layerdrop
        y = jnp.where(keep, y, x)
      x = y
      outputs.append(x)
    if cfg.layer_norm_first:
      outputs[-1] = norm(outputs[-1])
    return tuple(outputs)


class BEATs(nn.Module):
  """BEATs encoder over a normalised fbank (see `asd_jax.audio.fbank.BEATS_FBANK`).

  Attributes:
    config: the checkpoint's `BEATsConfig`.
    dtype: compute dtype (parameters stay float32; softmax and LayerNorm statistics run in float32).
    fused_attention: use `attention.fused_attention` (cuDNN flash attention on NVIDIA GPUs) instead of the
      explicit reference attention.
    remat: rematerialise each transformer layer in the backward pass (same gradients, less memory).
  """

  config: BEATsConfig = BEATS_ITER3_PLUS
  dtype: Any = jnp.float32
  fused_attention: bool = False
  remat: bool = False

  @nn.compact
  def __call__(self, fbank: jax.Array, padding_mask: jax.Array | None = None, *,
               train: bool = False) -> EncoderOutput:
    """Encodes `fbank: [batch, frames, 128]`; `padding_mask: [batch, frames]` bool, True = padded frame.

    Returns an `EncoderOutput` with one `[batch, tokens, dim]` array per layer, tokens = (frames // 16) * 8
    (time-major), and `token_mask` (True = real token) when a padding mask was given. In train mode dropout
    and layerdrop draw from the 'dropout' rng. A fine-tuned config also sows the AudioSet clip
    probabilities `[batch, classes]` into 'intermediates' as `audioset_probs`.
    """
    cfg = self.config
    patch = cfg.input_patch_size
    if fbank.ndim != 3 or fbank.shape[-1] != NUM_MEL_BINS:
      raise ValueError(f"BEATs expects fbank [batch, frames, {NUM_MEL_BINS}], got shape {fbank.shape}")
    if fbank.shape[1] < patch:
      raise ValueError(f"BEATs needs at least {patch} frames, got {fbank.shape[1]}")
    x = nn.Conv(cfg.embed_dim, (patch, patch), strides=(patch, patch), padding="VALID", use_bias=cfg.conv_bias,
                dtype=self.dtype, param_dtype=jnp.float32, name="patch_embedding")(fbank[..., None])
    batch, time_patches, freq_patches, channels = x.shape
    x = x.reshape(batch, time_patches * freq_patches, channels)  # token = t * freq_patches + f
    x = nn.LayerNorm(LAYER_NORM_EPS, dtype=self.dtype, param_dtype=jnp.float32, name="layer_norm")(x)
    if padding_mask is not None:
      padding_mask = token_padding_mask(padding_mask, x.shape[1])
    if cfg.embed_dim != cfg.encoder_embed_dim:
      x = nn.Dense(cfg.encoder_embed_dim, dtype=self.dtype, param_dtype=jnp.float32, name="post_extract_proj")(x)
    self.sow("intermediates", "patch_tokens", x)
    x = nn.Dropout(cfg.dropout_input, deterministic=not train)(x)
    encoder = TransformerEncoder(cfg, self.dtype, self.fused_attention, self.remat, name="encoder")
    layer_outputs = encoder(x, padding_mask, train=train)

    if cfg.finetuned_model:
      self._audioset_probs(layer_outputs[-1], padding_mask, train)
    token_mask = None if padding_mask is None else jnp.logical_not(padding_mask)
    return EncoderOutput(layer_outputs=layer_outputs, token_mask=token_mask, num_prefix_tokens=0)

  def _audioset_probs(self, x, padding_mask, train):
    """Upstream's fine-tuned head: token logits, mean over real tokens, sigmoid."""
    x = nn.Dropout(self.config.predictor_dropout, deterministic=not train)(x)
    logits = nn.Dense(self.config.predictor_class, dtype=self.dtype, param_dtype=jnp.float32,
                      name="predictor")(x).astype(jnp.float32)
    if padding_mask is None:
      clip_logits = jnp.mean(logits, axis=1)
    else:
      real = jnp.logical_not(padding_mask)[..., None].astype(jnp.float32)
      clip_logits = jnp.sum(logits * real, axis=1) / jnp.sum(real, axis=1)
    self.sow("intermediates", "audioset_probs", jax.nn.sigmoid(clip_logits))


# ------------------------------------------------------------------------------------------ conversion


def expected_state_dict_shapes(config: BEATsConfig) -> dict[str, tuple[int, ...]]:
  """Every key and shape of the upstream PyTorch state_dict for `config`."""
  c = config
  d, e, f, h = c.encoder_embed_dim, c.embed_dim, c.encoder_ffn_embed_dim, c.encoder_attention_heads
  shapes = {"patch_embedding.weight": (e, 1, c.input_patch_size, c.input_patch_size),
            "layer_norm.weight": (e,), "layer_norm.bias": (e,),
            "encoder.pos_conv.0.weight_g": (1, 1, c.conv_pos),
            "encoder.pos_conv.0.weight_v": (d, d // c.conv_pos_groups, c.conv_pos),
            "encoder.pos_conv.0.bias": (d,),
            "encoder.layer_norm.weight": (d,), "encoder.layer_norm.bias": (d,)}
  if c.conv_bias:
    shapes["patch_embedding.bias"] = (e,)
  if e != d:
    shapes.update({"post_extract_proj.weight": (d, e), "post_extract_proj.bias": (d,)})
  if c.finetuned_model:
    shapes.update({"predictor.weight": (c.predictor_class, d), "predictor.bias": (c.predictor_class,)})
  for i in range(c.encoder_layers):
    p = f"encoder.layers.{i}."
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
      shapes.update({f"{p}self_attn.{name}.weight": (d, d), f"{p}self_attn.{name}.bias": (d,)})
    if c.relative_position_embedding:
      shapes[f"{p}self_attn.relative_attention_bias.weight"] = (c.num_buckets, h)
    if c.gru_rel_pos:
      shapes.update({f"{p}self_attn.grep_linear.weight": (8, c.head_dim), f"{p}self_attn.grep_linear.bias": (8,),
                     f"{p}self_attn.grep_a": (1, h, 1, 1)})
    shapes.update({f"{p}fc1.weight": (f, d), f"{p}fc1.bias": (f,), f"{p}fc2.weight": (d, f), f"{p}fc2.bias": (d,)})
    for name in ("self_attn_layer_norm", "final_layer_norm"):
      shapes.update({f"{p}{name}.weight": (d,), f"{p}{name}.bias": (d,)})
  return shapes


def param_shapes(config: BEATsConfig) -> Any:
  """The Flax parameter tree of `config` as `jax.ShapeDtypeStruct`s (nothing allocated)."""
  model = BEATs(config)
  dummy = jax.ShapeDtypeStruct((1, config.input_patch_size, NUM_MEL_BINS), jnp.float32)
  return jax.eval_shape(lambda fb: model.init(jax.random.key(0), fb), dummy)["params"]


def _linear(sd, key):
  return {"kernel": sd[f"{key}.weight"].T, "bias": sd[f"{key}.bias"]}


def _norm(sd, key):
  return {"scale": sd[f"{key}.weight"], "bias": sd[f"{key}.bias"]}


def convert_state_dict(state_dict: collections.abc.Mapping[str, Any], config: BEATsConfig, *,
                       source: str = "state_dict") -> dict[str, Any]:
  """Maps an upstream BEATs state_dict (NumPy or torch tensors) onto the Flax parameter tree.

  Strict: raises `converted.CheckpointError` listing every missing, unexpected or mis-shaped key (by
  name, so e.g. an absent `k_proj.bias`, which cannot change the outputs, is still caught), and if the
  per-layer copies of the shared `relative_attention_bias` table differ. A fine-tuned checkpoint's
  `predictor.*` is kept as the `predictor` Dense.
  """
  sd = converted.state_dict_to_numpy(state_dict)
  converted.check_state_dict(sd, expected_state_dict_shapes(config), source=source)
  c = config
  conv = {"kernel": sd["patch_embedding.weight"].transpose(2, 3, 1, 0)}  # [out,in,h,w] -> [h,w,in,out]
  if c.conv_bias:
    conv["bias"] = sd["patch_embedding.bias"]
  params: dict[str, Any] = {"patch_embedding": conv, "layer_norm": _norm(sd, "layer_norm")}
  if c.embed_dim != c.encoder_embed_dim:
    params["post_extract_proj"] = _linear(sd, "post_extract_proj")
  encoder: dict[str, Any] = {
      "pos_conv": {"weight_g": sd["encoder.pos_conv.0.weight_g"].reshape(c.conv_pos),
                   "weight_v": sd["encoder.pos_conv.0.weight_v"].transpose(2, 1, 0),  # [out,in,k] -> [k,in,out]
                   "bias": sd["encoder.pos_conv.0.bias"]},
      "layer_norm": _norm(sd, "encoder.layer_norm")}
  if c.relative_position_embedding:
    tables = [f"encoder.layers.{i}.self_attn.relative_attention_bias.weight" for i in range(c.encoder_layers)]
    differing = [k for k in tables[1:] if not np.array_equal(sd[k], sd[tables[0]])]
    if differing:
      raise converted.CheckpointError(source, problems=[
          f"relative_attention_bias is shared by all layers, but {', '.join(differing)} differ(s) from "
          f"{tables[0]}"])
  for i in range(c.encoder_layers):
    p = f"encoder.layers.{i}."
    attn = {name: _linear(sd, f"{p}self_attn.{name}") for name in ("q_proj", "k_proj", "v_proj", "out_proj")}
    if c.gru_rel_pos:
      attn["grep_linear"] = _linear(sd, f"{p}self_attn.grep_linear")
      attn["grep_a"] = sd[f"{p}self_attn.grep_a"].reshape(c.encoder_attention_heads)
    if c.relative_position_embedding and i == 0:
      attn["relative_attention_bias"] = {"embedding": sd[f"{p}self_attn.relative_attention_bias.weight"]}
    encoder[f"layers_{i}"] = {"self_attn": attn, "self_attn_layer_norm": _norm(sd, f"{p}self_attn_layer_norm"),
                              "fc1": _linear(sd, f"{p}fc1"), "fc2": _linear(sd, f"{p}fc2"),
                              "final_layer_norm": _norm(sd, f"{p}final_layer_norm")}
  params["encoder"] = encoder
  if c.finetuned_model:
    params["predictor"] = _linear(sd, "predictor")
  params = jax.tree_util.tree_map(lambda a: np.ascontiguousarray(a, np.float32), params)
  _check_against_module(params, config, source)
  return params


def _check_against_module(params: Any, config: BEATsConfig, source: str) -> None:
  """Asserts the converted tree has exactly the module's parameter paths and shapes."""
  expected = {k: tuple(v.shape) for k, v in converted.flatten_params(param_shapes(config)).items()}
  converted.check_state_dict(converted.flatten_params(params), expected,
                                 source=f"{source} (converted Flax tree)")


def load(path: str | os.PathLike) -> tuple[BEATsConfig, dict[str, Any]]:
  """`(config, params)` from a converted checkpoint directory or a released `.pt` file (converted on the fly).

  `.pt` files must hold `{"cfg": dict, "model": state_dict}` and are read with `weights_only=True`.
  """
  path = pathlib.Path(path)
  if converted.looks_converted(path):
    cfg, params = converted.restore_converted(path, MODEL_NAME)
    config = BEATsConfig(**cfg)
    _check_against_module(params, config, str(path))
    return config, params
  checkpoint = converted.load_torch_checkpoint(path)
  missing = [k for k in ("cfg", "model") if k not in checkpoint]
  if missing:
    found = sorted(checkpoint)
    raise converted.CheckpointError(str(path), problems=[
        f"expected top-level entries 'cfg' and 'model', missing {missing} (found {len(found)}: {found[:8]}"
        f"{' ...' if len(found) > 8 else ''}); not a released BEATs checkpoint"])
  cfg = checkpoint["cfg"]
  # The released cfg always carries the sizes; without them (e.g. an EAT or fairseq checkpoint) the class
  # defaults would describe some other model and the error would be about that model.
  lacking = [k for k in _REQUIRED_CFG_KEYS if not isinstance(cfg, collections.abc.Mapping) or k not in cfg]
  if lacking:
    found = sorted(cfg) if isinstance(cfg, collections.abc.Mapping) else type(cfg).__name__
    raise converted.CheckpointError(str(path), problems=[
        f"cfg lacks {lacking} (found {found}); not a BEATs checkpoint"])
  config = BEATsConfig.from_checkpoint_cfg(cfg)
  return config, convert_state_dict(checkpoint["model"], config, source=str(path))
