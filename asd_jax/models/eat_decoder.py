"""EAT's lightweight 2-D CNN decoder (pre-training only), in Flax linen, and its weight conversion.

The decoder sees the student's output with a mask token at every masked patch, laid out on the patch grid
`[views, time patches, freq patches, dim]`, and predicts the teacher's target at every patch. Structure
(upstream `Decoder2d` in EAT `models/modules.py`, configured by `modalities.image.decoder`):

- `decoder_layers` layers, each: grouped 2-D convolution (`decoder_dim` outputs, kernel `decoder_kernel`,
  `decoder_groups` groups, zero "same" padding; an even kernel drops the last row and column) -> LayerNorm
  over channels without scale or bias (eps 1e-5) -> exact GELU -> plus the layer's input when the channel
  counts match (`decoder_residual`; so also on layer 0 when decoder_dim equals the encoder dim).
- a final Linear `decoder_dim -> encoder dim` on every patch.

EAT-base: 6 layers, kernel 3, dim 768 (2,585,856 parameters); EAT-large: 3 layers, kernel 5, dim 1024
(5,967,872); both 16 groups. Parameter names: `conv_{i}` (kernel `[k, k, in / groups, out]`, bias) and
`proj`; the fairseq tensors are `modality_encoders.IMAGE.decoder.blocks.{i}.0.*` and `...decoder.proj.*`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from asd_jax.checkpoints import converted

LAYER_NORM_EPS = 1e-5  # fairseq's LayerNorm default, which the decoder uses


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """Decoder hyper-parameters (upstream `D2vDecoderConfig` as EAT's pretraining yamls set them)."""

  decoder_dim: int = 768
  decoder_groups: int = 16
  decoder_kernel: int = 3
  decoder_layers: int = 6
  decoder_residual: bool = True

  def __post_init__(self):
    if self.decoder_dim % self.decoder_groups:
      raise ValueError(f"decoder_dim {self.decoder_dim} is not divisible by decoder_groups {self.decoder_groups}")

  @classmethod
  def from_fairseq_cfg(cls, decoder: Mapping[str, Any]) -> "DecoderConfig":
    """From `cfg["model"]["modalities"]["image"]["decoder"]`; refuses settings the CNN decoder lacks."""
    unsupported = {"input_dropout": (float(decoder.get("input_dropout", 0.0)), 0.0),
                   "add_positions_masked": (bool(decoder.get("add_positions_masked", False)), False),
                   "add_positions_all": (bool(decoder.get("add_positions_all", False)), False)}
    bad = [f"{k}={found!r} (supported: {want!r})" for k, (found, want) in unsupported.items() if found != want]
    if bad:
      raise ValueError("fairseq cfg model.modalities.image.decoder: unsupported settings: " + ", ".join(bad))
    return cls(decoder_dim=int(decoder["decoder_dim"]), decoder_groups=int(decoder["decoder_groups"]),
               decoder_kernel=int(decoder["decoder_kernel"]), decoder_layers=int(decoder["decoder_layers"]),
               decoder_residual=bool(decoder.get("decoder_residual", True)))

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


DECODER_BASE = DecoderConfig(decoder_dim=768, decoder_kernel=3, decoder_layers=6)
DECODER_LARGE = DecoderConfig(decoder_dim=1024, decoder_kernel=5, decoder_layers=3)


def _torch_conv_default(fan_in: int):
  """PyTorch's default Conv/Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for weights and biases."""
  bound = 1.0 / np.sqrt(fan_in)
  return lambda rng, shape, dtype=jnp.float32: jax.random.uniform(rng, shape, dtype, -bound, bound)


CONV_IMPLS = ("auto", "xla", "columns")


def _padding(k: int) -> tuple[int, int]:
  """PyTorch's padding k // 2 on both sides, then (SamePad2d) the last row and column dropped if k is even."""
  return k // 2, k // 2 - (1 - k % 2)


def conv_impl(impl: str) -> str:
  """"auto" -> "columns" on CPU, "xla" elsewhere; checks the name."""
  if impl == "auto":
    return "columns" if jax.default_backend() == "cpu" else "xla"
  if impl not in CONV_IMPLS:
    raise ValueError(f"conv impl {impl!r} is not one of {CONV_IMPLS}")
  return impl


def grouped_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array, groups: int) -> jax.Array:
  """Zero-padded "same" grouped 2-D convolution (XLA's) of `x [n, h, w, in]`, `kernel [k, k, in / groups, out]`."""
  pad = _padding(kernel.shape[0])
  y = jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1), (pad, pad),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)
  return y + bias.astype(y.dtype)


def grouped_conv_columns(y: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """The same convolution on group-major activations `y [groups, n, h, w, in / groups]` -> `[groups, n, h, w,
  out / groups]`: each group's k * k shifted views side by side, then one batched matrix product."""
  groups, n, h, w, per_group = y.shape
  k, out = kernel.shape[0], kernel.shape[-1]
  before, after = _padding(k)
  padded = jnp.pad(y, ((0, 0), (0, 0), (before, after), (before, after), (0, 0)))
  columns = jnp.concatenate([padded[:, :, i:i + h, j:j + w] for i in range(k) for j in range(k)], axis=-1)
  weights = jnp.moveaxis(kernel.astype(y.dtype).reshape(k * k * per_group, groups, out // groups), 1, 0)
  z = jnp.einsum("gnhwc,gco->gnhwo", columns, weights)
  return z + bias.astype(z.dtype).reshape(groups, 1, 1, 1, out // groups)


def _layer_norm(x: jax.Array, axes) -> jax.Array:
  """LayerNorm without scale and bias (eps 1e-5) over `axes`: two-pass statistics in float32."""
  y = x.astype(jnp.float32)
  mean = jnp.mean(y, axis=axes, keepdims=True)
  var = jnp.mean(jnp.square(y - mean), axis=axes, keepdims=True)
  return ((y - mean) * jax.lax.rsqrt(var + LAYER_NORM_EPS)).astype(x.dtype)


class GroupedConv(nn.Module):
  """A grouped convolution's `kernel [k, k, in / groups, features]` and `bias [features]` (PyTorch init),
  applied to NHWC (`group_major=False`) or group-major activations."""

  features: int
  kernel_size: int
  groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, group_major: bool) -> jax.Array:
    k = self.kernel_size
    channels = x.shape[0] * x.shape[-1] if group_major else x.shape[-1]
    init = _torch_conv_default(channels // self.groups * k * k)
    kernel = self.param("kernel", init, (k, k, channels // self.groups, self.features))
    bias = self.param("bias", init, (self.features,))
    x = x.astype(self.dtype)
    return grouped_conv_columns(x, kernel, bias) if group_major else grouped_conv(x, kernel, bias, self.groups)


class Decoder(nn.Module):
  """`[views, time, freq, embed_dim]` (mask tokens at masked patches) -> `[views, time, freq, embed_dim]`.

  The initialisation is upstream's: PyTorch's default for the convolutions and the projection.
  `conv_impl` ("auto", "xla", "columns"; same outputs) picks how the grouped convolutions run: "xla" is XLA's
  grouped convolution (fast on GPU/TPU); "columns" keeps the activations group-major
  (`[groups, views, time, freq, dim / groups]`, LayerNorm over groups and channels) and turns every layer into
  one batched matrix product of shifted views. XLA's CPU backend differentiates its grouped convolution very
  slowly (EAT-base's decoder: minutes per step, against seconds as columns); "auto" = columns on CPU.
  """

  config: DecoderConfig
  embed_dim: int
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    groups = cfg.decoder_groups
    group_major = conv_impl(self.conv_impl) == "columns"
    views, time, freq, channels = x.shape
    if group_major:
      x = jnp.moveaxis(x.reshape(views, time, freq, groups, channels // groups), 3, 0)
    norm_axes = (0, 4) if group_major else (-1,)
    residual = x
    x = x.astype(self.dtype)
    for i in range(cfg.decoder_layers):
      x = GroupedConv(cfg.decoder_dim, cfg.decoder_kernel, groups, self.dtype, name=f"conv_{i}")(x, group_major)
      x = nn.gelu(_layer_norm(x, norm_axes), approximate=False)
      if cfg.decoder_residual and residual.shape == x.shape:
        x = x + residual.astype(x.dtype)
      residual = x
    if group_major:
      x = jnp.moveaxis(x, 0, 3).reshape(views, time, freq, cfg.decoder_dim)
    init = _torch_conv_default(cfg.decoder_dim)
    return nn.Dense(self.embed_dim, dtype=self.dtype, kernel_init=init, bias_init=init, name="proj")(x)


def torch_layout(config: DecoderConfig, embed_dim: int) -> dict[str, tuple[int, ...]]:
  """Decoder tensors under their names below `decoder.` -> PyTorch shapes."""
  layout = {}
  in_dim = embed_dim
  for i in range(config.decoder_layers):
    k = config.decoder_kernel
    layout[f"blocks.{i}.0.weight"] = (config.decoder_dim, in_dim // config.decoder_groups, k, k)
    layout[f"blocks.{i}.0.bias"] = (config.decoder_dim,)
    in_dim = config.decoder_dim
  layout["proj.weight"] = (embed_dim, config.decoder_dim)
  layout["proj.bias"] = (embed_dim,)
  return layout


def convert_state_dict(state_dict: Mapping[str, Any], config: DecoderConfig, embed_dim: int, *,
                       prefix: str = "", source: str = "decoder state_dict") -> dict[str, Any]:
  """Flax decoder params from PyTorch tensors named `prefix + torch_layout(...)` keys; strict: any missing,
  extra or mis-shaped tensor under `prefix` raises `CheckpointError` (other keys are the caller's)."""
  layout = {prefix + name: shape for name, shape in torch_layout(config, embed_dim).items()}
  converted.check_state_dict({k: v for k, v in state_dict.items() if k.startswith(prefix)}, layout,
                                 source=source)
  arrays = converted.state_dict_to_numpy({k: state_dict[k] for k in layout})
  get = lambda name: arrays[prefix + name].astype(np.float32)  # noqa: E731
  params = {f"conv_{i}": {"kernel": np.ascontiguousarray(get(f"blocks.{i}.0.weight").transpose(2, 3, 1, 0)),
                          "bias": get(f"blocks.{i}.0.bias")} for i in range(config.decoder_layers)}
  params["proj"] = {"kernel": np.ascontiguousarray(get("proj.weight").T), "bias": get("proj.bias")}
  return jax.tree.map(jnp.asarray, params)


def to_state_dict(params: Mapping[str, Any], config: DecoderConfig, *, prefix: str = "") -> dict[str, np.ndarray]:
  """The inverse of `convert_state_dict`: PyTorch-layout NumPy arrays named `prefix + ...`."""
  out = {}
  for i in range(config.decoder_layers):
    conv = params[f"conv_{i}"]
    out[f"{prefix}blocks.{i}.0.weight"] = np.ascontiguousarray(np.asarray(conv["kernel"]).transpose(3, 2, 0, 1))
    out[f"{prefix}blocks.{i}.0.bias"] = np.asarray(conv["bias"])
  out[prefix + "proj.weight"] = np.ascontiguousarray(np.asarray(params["proj"]["kernel"]).T)
  out[prefix + "proj.bias"] = np.asarray(params["proj"]["bias"])
  return out
