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

from asd_jax.models import checkpoint_io

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


CONV_IMPLS = ("auto", "xla", "taps")


def grouped_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array, groups: int, impl: str = "auto") -> jax.Array:
  """Zero-padded "same" grouped 2-D convolution of `x [n, h, w, in]` with `kernel [k, k, in / groups, out]`.

  `impl`: "xla" = `lax.conv_general_dilated` with `feature_group_count`; "taps" = a sum over the k * k kernel
  taps of grouped matrix products (one shifted view of `x` each), which XLA's CPU backend runs (and
  differentiates) far faster than its grouped convolution; "auto" = taps on CPU, XLA elsewhere. Same maths.
  An even kernel pads k // 2 before and k // 2 - 1 after (PyTorch's padding k // 2, then the last row and
  column dropped, as upstream's SamePad2d does).
  """
  k = kernel.shape[0]
  before, after = k // 2, k // 2 - (1 - k % 2)
  if impl == "auto":
    impl = "taps" if jax.default_backend() == "cpu" else "xla"
  if impl == "xla":
    y = jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1), ((before, after), (before, after)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)
    return y + bias.astype(y.dtype)
  if impl != "taps":
    raise ValueError(f"conv impl {impl!r} is not one of {CONV_IMPLS}")
  n, h, w, channels = x.shape
  out = kernel.shape[-1]
  padded = jnp.pad(x, ((0, 0), (before, after), (before, after), (0, 0))).reshape(
      n, h + k - 1, w + k - 1, groups, channels // groups)
  taps = kernel.astype(x.dtype).reshape(k, k, channels // groups, groups, out // groups)
  y = None
  for i in range(k):
    for j in range(k):
      term = jnp.einsum("nhwgc,cgo->nhwgo", padded[:, i:i + h, j:j + w], taps[i, j])
      y = term if y is None else y + term
  return y.reshape(n, h, w, out) + bias.astype(y.dtype)


class GroupedConv(nn.Module):
  """`grouped_conv` with its own `kernel [k, k, in / groups, features]` and `bias [features]` (PyTorch init)."""

  features: int
  kernel_size: int
  groups: int
  dtype: Any = jnp.float32
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    init = _torch_conv_default(x.shape[-1] // self.groups * k * k)
    kernel = self.param("kernel", init, (k, k, x.shape[-1] // self.groups, self.features))
    bias = self.param("bias", init, (self.features,))
    return grouped_conv(x.astype(self.dtype), kernel, bias, self.groups, self.impl)


class Decoder(nn.Module):
  """`[views, time, freq, embed_dim]` (mask tokens at masked patches) -> `[views, time, freq, embed_dim]`.

  The initialisation is upstream's: PyTorch's default for the convolutions and the projection. `conv_impl`
  picks how the grouped convolutions run (`grouped_conv`; same outputs).
  """

  config: DecoderConfig
  embed_dim: int
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    k, groups = cfg.decoder_kernel, cfg.decoder_groups
    residual = x
    x = x.astype(self.dtype)
    for i in range(cfg.decoder_layers):
      x = GroupedConv(cfg.decoder_dim, k, groups, self.dtype, self.conv_impl, name=f"conv_{i}")(x)
      x = nn.LayerNorm(epsilon=LAYER_NORM_EPS, use_bias=False, use_scale=False, use_fast_variance=False,
                       dtype=self.dtype, name=f"norm_{i}")(x)
      x = nn.gelu(x, approximate=False)
      if cfg.decoder_residual and residual.shape[-1] == x.shape[-1]:
        x = x + residual.astype(x.dtype)
      residual = x
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
  checkpoint_io.check_state_dict({k: v for k, v in state_dict.items() if k.startswith(prefix)}, layout,
                                 source=source)
  arrays = checkpoint_io.state_dict_to_numpy({k: state_dict[k] for k in layout})
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
