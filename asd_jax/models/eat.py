"""EAT audio encoder (data2vec 2.0 style ViT over log-mel patches) in Flax linen, and its weight loading.

EAT (Chen et al., 2024; github.com/cwx-worst-one/EAT) cuts a normalised fbank `[batch, frames, 128]` into
16x16 patches, adds a position table, puts a CLS token in front, normalises once and runs post-LN
transformer blocks. The token order is time-major (token n = t * 8 + f for 8 frequency patches), the
output of every block is returned (`EncoderOutput`), and token 0 is the utterance (CLS) embedding.

Layout choices, so that fine-tuning code can treat BEATs and EAT alike:
- Attention uses four `nn.Dense` submodules `q_proj`, `k_proj`, `v_proj`, `out_proj` (kernels `[in, out]`).
  The released weights fuse q, k and v into one `qkv` Linear; the converter splits its rows
  (0:D -> q, D:2D -> k, 2D:3D -> v). The split is exact: a fused matmul and three matmuls on the same rows
  give the same numbers. LoRA can then target `.../(q_proj|v_proj|out_proj)/kernel` as for BEATs.
- The position table is the parameter `positions: [max_positions, dim]`, taken from the checkpoint (its
  row count is read from there, 6144 in the released models). Upstream never trains it, so the forward
  pass stops its gradient; an optimizer should also leave it out of weight decay.
- `padding_mask` is optional. Upstream pads every clip's log-mel to `target_length` frames (1024 = 10 s)
  and attends to the padded frames, so the reference behaviour is `padding_mask=None`. With a mask, a
  time patch whose 16 frames are all padding is hidden from attention (as a key) and from mean pooling.

Released checkpoints come in two forms, both read by `load()`: the fairseq pretraining `.pt`
(`{"cfg", "model"}`, student encoder under `modality_encoders.IMAGE.*` and `blocks.*`, plus a CNN decoder
and an `_ema` teacher that inference ignores) and the HuggingFace port (`model.safetensors` with
`model.*` names, plus `config.json`). `load_fairseq_pretraining()` reads all three parts of the `.pt`
(student, `_ema` teacher, decoder) for continued pre-training, as strictly.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from asd_jax.checkpoints import converted
from asd_jax.checkpoints.converted import CheckpointError
from asd_jax.models import attention
from asd_jax.models.encoder_output import POOL_CLS, EncoderOutput, pool_tokens


@dataclasses.dataclass(frozen=True)
class EATConfig:
  """EAT encoder hyper-parameters.

  Dropout names follow fairseq's `Data2VecMultiConfig` (HF port names in brackets):
  `encoder_dropout` after the attention output projection [drop_rate], `attention_dropout` on attention
  weights [attn_drop_rate], `activation_dropout` after GELU and after fc2 [activation_dropout],
  `post_mlp_dropout` on the MLP branch before the residual add [post_mlp_drop], `input_dropout` on the
  normalised block-0 input (fairseq `dropout_input` and `prenet_dropout` combined), and stochastic depth rising
  linearly from `start_drop_path_rate` to `end_drop_path_rate` over the blocks.
  """

  depth: int = 12
  embed_dim: int = 768
  num_heads: int = 12
  mlp_ratio: float = 4.0
  norm_eps: float = 1e-6
  patch_size: int = 16
  in_chans: int = 1
  num_mel_bins: int = 128
  num_extra_tokens: int = 1
  max_positions: int = 6144  # rows of the position table; loaders take it from the checkpoint
  target_length: int = 1024  # fbank frames per clip (the front end pads/crops to this); 10 s
  encoder_dropout: float = 0.0
  attention_dropout: float = 0.0
  activation_dropout: float = 0.0
  post_mlp_dropout: float = 0.0
  input_dropout: float = 0.0
  start_drop_path_rate: float = 0.0
  end_drop_path_rate: float = 0.0

  def __post_init__(self):
    if self.embed_dim % self.num_heads:
      raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
    if self.num_mel_bins % self.patch_size:
      raise ValueError(f"num_mel_bins {self.num_mel_bins} is not divisible by patch_size {self.patch_size}")
    if self.in_chans != 1:
      raise ValueError(f"EAT takes a single-channel fbank; in_chans is {self.in_chans}")

  @property
  def mlp_dim(self) -> int:
    return int(self.embed_dim * self.mlp_ratio)

  @property
  def freq_patches(self) -> int:
    """Patches along the mel axis (8 for 128 bins)."""
    return self.num_mel_bins // self.patch_size

  @classmethod
  def from_fairseq_cfg(cls, cfg: Mapping[str, Any], **overrides) -> "EATConfig":
    """From a fairseq checkpoint's `cfg` (the whole dict, or its `model` group).

    Settings the encoder does not implement (pre-LN blocks, ALiBi, prenet blocks, a projection after
    the patch conv, a learned-free model without positions) are refused with a clear error.
    """
    model = cfg.get("model", cfg) if isinstance(cfg.get("model", None), Mapping) else cfg
    try:
      image = model["modalities"]["image"]
    except (KeyError, TypeError) as e:
      raise ValueError("fairseq cfg has no model.modalities.image group; is this an EAT checkpoint?") from e
    _refuse_unsupported("fairseq cfg", {
        "model.layer_norm_first": (model.get("layer_norm_first", False), False),
        "model.norm_affine": (model.get("norm_affine", True), True),
        "model.modalities.image.prenet_depth": (image.get("prenet_depth", 0), 0),
        "model.modalities.image.use_alibi_encoder": (image.get("use_alibi_encoder", False), False),
        "model.modalities.image.fixed_positions": (image.get("fixed_positions", True), True),
        "model.modalities.image.embed_dim": (image.get("embed_dim", model["embed_dim"]), model["embed_dim"]),
    })
    patch = int(image.get("patch_size", 16))
    fields = dict(
        depth=int(model["depth"]), embed_dim=int(model["embed_dim"]), num_heads=int(model["num_heads"]),
        mlp_ratio=float(model.get("mlp_ratio", 4.0)), norm_eps=float(model.get("norm_eps", 1e-6)),
        patch_size=patch, in_chans=int(image.get("in_chans", 1)),
        num_extra_tokens=int(image.get("num_extra_tokens", 1)),
        max_positions=int(image.get("max_length", 768)) * (128 // patch),
        target_length=int(image.get("target_length", 1024)),
        encoder_dropout=float(model.get("encoder_dropout", 0.0)),
        attention_dropout=float(model.get("attention_dropout", 0.0)),
        activation_dropout=float(model.get("activation_dropout", 0.0)),
        post_mlp_dropout=float(model.get("post_mlp_drop", 0.0)),
        # fairseq drops out the block-0 input twice (prenet_dropout, then dropout_input); two independent
        # inverted dropouts equal one whose keep probability is the product.
        input_dropout=1.0 - (1.0 - float(model.get("dropout_input", 0.0)))
        * (1.0 - float(image.get("prenet_dropout", 0.0))),
        start_drop_path_rate=float(model.get("start_drop_path_rate", 0.0)),
        end_drop_path_rate=float(model.get("end_drop_path_rate", 0.0)))
    fields.update(overrides)
    return cls(**fields)

  @classmethod
  def from_hf_config(cls, config: Mapping[str, Any], **overrides) -> "EATConfig":
    """From the HuggingFace port's `config.json` fields (`EATConfig` of `worstchan/EAT-*`)."""
    if config.get("model_type", "eat") != "eat":
      raise ValueError(f"HF config model_type is {config.get('model_type')!r}, expected 'eat'")
    patch = int(config.get("patch_size", 16))
    _refuse_unsupported("HF config", {
        "layer_norm_first": (config.get("layer_norm_first", False), False),
        "norm_affine": (config.get("norm_affine", True), True),
        "fixed_positions": (config.get("fixed_positions", True), True),
        "qkv_bias": (config.get("qkv_bias", True), True),
        "stride": (config.get("stride", patch), patch),
    })
    mel_bins = int(config.get("mel_bins", 128))
    img_size = config.get("img_size", [1024, mel_bins])
    fields = dict(
        depth=int(config["depth"]), embed_dim=int(config["embed_dim"]), num_heads=int(config["num_heads"]),
        mlp_ratio=float(config.get("mlp_ratio", 4.0)), norm_eps=float(config.get("norm_eps", 1e-6)),
        patch_size=patch, in_chans=int(config.get("in_chans", 1)), num_mel_bins=mel_bins,
        max_positions=int(config.get("max_length", 768)) * (mel_bins // patch),
        target_length=int(img_size[0]),
        encoder_dropout=float(config.get("drop_rate", 0.0)),
        attention_dropout=float(config.get("attn_drop_rate", 0.0)),
        activation_dropout=float(config.get("activation_dropout", 0.0)),
        post_mlp_dropout=float(config.get("post_mlp_drop", 0.0)),
        start_drop_path_rate=float(config.get("start_drop_path_rate", 0.0)),
        end_drop_path_rate=float(config.get("end_drop_path_rate", 0.0)))
    fields.update(overrides)
    return cls(**fields)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _refuse_unsupported(source: str, settings: Mapping[str, tuple[Any, Any]]) -> None:
  bad = [f"{name}={found!r} (supported: {want!r})" for name, (found, want) in settings.items() if found != want]
  if bad:
    raise ValueError(f"{source}: unsupported EAT settings: {', '.join(bad)}")


EAT_BASE = EATConfig(depth=12, embed_dim=768, num_heads=12)
EAT_LARGE = EATConfig(depth=24, embed_dim=1024, num_heads=16)
EAT_TINY = EATConfig(depth=2, embed_dim=64, num_heads=4)  # the fixture's size; for demos and tests


def sincos_positions(num_rows: int, dim: int, freq_patches: int = 8) -> np.ndarray:
  """The released fixed 2-D sin-cos table `[num_rows, dim]`, float32.

  Row p = t * freq_patches + f is `[sincos(f); sincos(t)]`, where sincos(x) is
  `[sin(x w_k)]_k ++ [cos(x w_k)]_k` with `w_k = 10000 ** (-k / (dim / 4))`, k < dim / 4.
  """
  if dim % 4:
    raise ValueError(f"sin-cos positions need dim divisible by 4, got {dim}")
  quarter = dim // 4
  omega = 10000.0 ** (-np.arange(quarter, dtype=np.float64) / quarter)
  rows = np.arange(num_rows)

  def sincos(x):
    angles = x[:, None] * omega[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

  return np.concatenate([sincos(rows % freq_patches), sincos(rows // freq_patches)], axis=1).astype(np.float32)


def _drop_path(x: jax.Array, rate: float, deterministic: bool, rng_module: nn.Module) -> jax.Array:
  """Stochastic depth: drops a residual branch `x: [batch, ...]` per example, rescaling survivors."""
  if deterministic or rate == 0.0:
    return x
  keep = 1.0 - rate
  mask = jax.random.bernoulli(rng_module.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / keep, 0).astype(x.dtype)


class Attention(nn.Module):
  """Multi-head self-attention with separate q/k/v/out projections; softmax in float32.

  `fused` computes the same attention with `attention.fused_attention` (cuDNN flash attention on NVIDIA
  GPUs in bf16), except in training with attention dropout, which it cannot apply.
  """

  num_heads: int
  attention_dropout: float = 0.0
  output_dropout: float = 0.0
  dtype: Any = jnp.float32
  fused: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, key_mask: jax.Array | None, deterministic: bool) -> jax.Array:
    """`x: [batch, tokens, dim]`, `key_mask: [batch, tokens]` bool (True = attend) or None."""
    batch, tokens, dim = x.shape
    head_dim = dim // self.num_heads
    dense = functools.partial(nn.Dense, dim, dtype=self.dtype)
    split = lambda y: y.reshape(batch, tokens, self.num_heads, head_dim)
    q = split(dense(name="q_proj")(x))
    k = split(dense(name="k_proj")(x))
    v = split(dense(name="v_proj")(x))
    if self.fused and (deterministic or self.attention_dropout == 0.0):
      mask = None if key_mask is None else key_mask[:, None, None, :]
      out = attention.fused_attention(q, k, v, mask=mask, scale=head_dim ** -0.5)
    else:
      logits = attention.attention_logits(q, k, head_dim ** -0.5).astype(jnp.float32)
      if key_mask is not None:
        logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
      weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
      weights = nn.Dropout(self.attention_dropout, name="attention_dropout")(weights, deterministic=deterministic)
      out = attention.attend(weights, v)
    out = dense(name="out_proj")(out.reshape(batch, tokens, dim))
    # Named, so that its rng stream is the same whether or not the attention-weight dropout exists.
    return nn.Dropout(self.output_dropout, name="output_dropout")(out, deterministic=deterministic)


class Mlp(nn.Module):
  """fc1 -> exact GELU -> dropout -> fc2 -> dropout."""

  hidden_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    h = nn.gelu(nn.Dense(self.hidden_dim, dtype=self.dtype, name="fc1")(x), approximate=False)
    h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
    h = nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(h)
    return nn.Dropout(self.dropout)(h, deterministic=deterministic)


class Block(nn.Module):
  """Post-LN block: x = norm1(x + attn(x)); x = norm2(x + mlp(x)). Returns (x, mlp output)."""

  config: EATConfig
  drop_path_rate: float = 0.0
  dtype: Any = jnp.float32
  fused_attention: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, key_mask: jax.Array | None,
               deterministic: bool) -> tuple[jax.Array, jax.Array]:
    cfg = self.config
    norm = functools.partial(nn.LayerNorm, epsilon=cfg.norm_eps, dtype=self.dtype)
    attn = Attention(cfg.num_heads, cfg.attention_dropout, cfg.encoder_dropout, self.dtype, self.fused_attention,
                     name="attn")
    x = norm(name="norm1")(x + _drop_path(attn(x, key_mask, deterministic), self.drop_path_rate,
                                          deterministic, self))
    ffn = Mlp(cfg.mlp_dim, cfg.activation_dropout, self.dtype, name="mlp")(x, deterministic)
    branch = nn.Dropout(cfg.post_mlp_dropout)(ffn, deterministic=deterministic)
    x = norm(name="norm2")(x + _drop_path(branch, self.drop_path_rate, deterministic, self))
    return x, ffn


def token_mask_from_frames(padding_mask: jax.Array, config: EATConfig) -> jax.Array:
  """Token mask `[batch, extra + patches]` (True = real) from a frame mask `[batch, frames]` (True = padded).

  A time patch counts as padding only when all its `patch_size` frames are padding; each time patch covers
  `freq_patches` tokens (time-major order); the CLS token is always real.
  """
  batch, frames = padding_mask.shape
  patch_padded = padding_mask.reshape(batch, frames // config.patch_size, config.patch_size).all(axis=-1)
  tokens_real = jnp.repeat(~patch_padded, config.freq_patches, axis=1)
  return jnp.concatenate([jnp.ones((batch, config.num_extra_tokens), bool), tokens_real], axis=1)


class EAT(nn.Module):
  """The EAT encoder. Parameters: `patch_embed`, `positions`, `cls_token`, `pre_norm`, `blocks_{i}`.

  Intermediates sown into the `intermediates` collection (pass `mutable=["intermediates"]` to see them):
  `patch_tokens [batch, patches, dim]` (patch conv output), `encoder_input [batch, 1 + patches, dim]`
  (block-0 input) and `ffn_outputs` (each block's MLP output before the residual, data2vec targets).

  `fused_attention` uses `attention.fused_attention` (same outputs); `remat` recomputes each block's
  activations in the backward pass instead of storing them (same gradients, less memory).
  """

  config: EATConfig
  dtype: Any = jnp.float32
  fused_attention: bool = False
  remat: bool = False

  @nn.compact
  def __call__(self, fbank: jax.Array, padding_mask: jax.Array | None = None, *,
               train: bool = False, visible: jax.Array | None = None) -> EncoderOutput:
    """Encodes `fbank: [batch, frames, mel]` (EAT-normalised, frames a multiple of 16).

    Args:
      fbank: `[batch, frames, num_mel_bins]` log-mel fbank from the EAT front end.
      padding_mask: optional `[batch, frames]` bool, True on padded frames. None (the upstream behaviour)
        lets every token attend to every token, padded frames included.
      train: enables dropout and stochastic depth (needs the 'dropout' rng).
      visible: optional `[batch, views, kept]` int patch indices (pre-training's masked student): every clip
        is encoded `views` times, each time only its `kept` listed patches (positions added first) behind
        the CLS token. The output batch is then `batch * views`, clip-major (row `b * views + v`), with
        `1 + kept` tokens in the listed order. Not combinable with `padding_mask`.

    Returns:
      `EncoderOutput` with one `[batch, 1 + patches, dim]` array per block (after its norm2), token 0 being
      CLS; `token_mask` is None without a padding mask; `num_prefix_tokens` = num_extra_tokens.
    """
    cfg = self.config
    batch, frames, mel = fbank.shape
    if mel != cfg.num_mel_bins:
      raise ValueError(f"EAT expects fbank [batch, frames, {cfg.num_mel_bins}], got {fbank.shape}")
    if frames % cfg.patch_size:
      raise ValueError(f"EAT needs frames divisible by {cfg.patch_size} (pad the fbank to target_length); "
                       f"got {frames}")
    num_patches = frames // cfg.patch_size * cfg.freq_patches
    if num_patches > cfg.max_positions:
      raise ValueError(f"{frames} frames give {num_patches} patches, more than the {cfg.max_positions} "
                       "rows of the position table")
    if padding_mask is not None and padding_mask.shape != (batch, frames):
      raise ValueError(f"padding_mask shape {padding_mask.shape} does not match fbank frames {(batch, frames)}")
    deterministic = not train

    x = nn.Conv(cfg.embed_dim, (cfg.patch_size, cfg.patch_size), strides=(cfg.patch_size, cfg.patch_size),
                padding="VALID", dtype=self.dtype, name="patch_embed")(fbank[..., None].astype(self.dtype))
    x = x.reshape(batch, num_patches, cfg.embed_dim)  # [batch, time patches * freq patches, dim], time-major
    self.sow("intermediates", "patch_tokens", x)

    positions = self.param(
        "positions", lambda _, shape: jnp.asarray(sincos_positions(*shape, cfg.freq_patches)),
        (cfg.max_positions, cfg.embed_dim))
    x = x + jax.lax.stop_gradient(positions[:num_patches]).astype(self.dtype)
    if visible is not None:
      if padding_mask is not None:
        raise ValueError("EAT: visible (masked views) and padding_mask cannot be combined")
      if visible.ndim != 3 or visible.shape[0] != batch:
        raise ValueError(f"EAT: visible must be [batch={batch}, views, kept] patch indices, got {visible.shape}")
      views, kept = visible.shape[1:]
      x = x[jnp.arange(batch)[:, None, None], visible]  # [batch, views, kept, dim]
      batch, x = batch * views, x.reshape(batch * views, kept, cfg.embed_dim)
    cls = self.param("cls_token", nn.initializers.normal(0.02), (1, cfg.num_extra_tokens, cfg.embed_dim))
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (batch,) + cls.shape[1:]), x], axis=1)
    x = nn.LayerNorm(epsilon=cfg.norm_eps, dtype=self.dtype, name="pre_norm")(x)
    x = nn.Dropout(cfg.input_dropout)(x, deterministic=deterministic)
    self.sow("intermediates", "encoder_input", x)

    token_mask = None if padding_mask is None else token_mask_from_frames(padding_mask, cfg)
    drop_path_rates = np.linspace(cfg.start_drop_path_rate, cfg.end_drop_path_rate, cfg.depth)
    block_type = nn.remat(Block, static_argnums=(3,)) if self.remat else Block  # 3: `deterministic`
    outputs = []
    for i in range(cfg.depth):
      block = block_type(cfg, float(drop_path_rates[i]), self.dtype, self.fused_attention, name=f"blocks_{i}")
      x, ffn = block(x, token_mask, deterministic)
      self.sow("intermediates", "ffn_outputs", ffn)
      outputs.append(x)
    return EncoderOutput(layer_outputs=tuple(outputs), token_mask=token_mask,
                         num_prefix_tokens=cfg.num_extra_tokens)


def utterance_embedding(output: EncoderOutput, mode: str = POOL_CLS, layer: int = -1) -> jax.Array:
  """Clip embedding `[batch, dim]` from one layer: the CLS token (EAT's reference) or mean of frame tokens."""
  return pool_tokens(output.layer_outputs[layer], output.token_mask, output.num_prefix_tokens, mode)


# ---------------------------------------------------------------------------------------------------------
# Weight conversion from the released PyTorch forms.

FAIRSEQ_PREFIX = "modality_encoders.IMAGE."
FAIRSEQ_IGNORED_PREFIXES = (FAIRSEQ_PREFIX + "decoder.", "_ema")  # pretraining-only: CNN decoder, EMA teacher


def _torch_layout(config: EATConfig) -> dict[str, tuple[int, ...]]:
  """Encoder tensors under neutral names (the HF names without `model.`) -> PyTorch shapes."""
  d, p = config.embed_dim, config.patch_size
  layout = {
      "local_encoder.proj.weight": (d, config.in_chans, p, p),
      "local_encoder.proj.bias": (d,),
      "extra_tokens": (1, config.num_extra_tokens, d),
      "fixed_positional_encoder.positions": (1, config.max_positions, d),
      "pre_norm.weight": (d,),
      "pre_norm.bias": (d,),
  }
  for i in range(config.depth):
    b = f"blocks.{i}."
    layout.update({
        b + "norm1.weight": (d,), b + "norm1.bias": (d,),
        b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,),
        b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
        b + "norm2.weight": (d,), b + "norm2.bias": (d,),
        b + "mlp.fc1.weight": (config.mlp_dim, d), b + "mlp.fc1.bias": (config.mlp_dim,),
        b + "mlp.fc2.weight": (d, config.mlp_dim), b + "mlp.fc2.bias": (d,),
    })
  return layout


def _fairseq_name(name: str) -> str:
  if name.startswith("blocks."):
    return name
  if name.startswith("pre_norm."):
    return FAIRSEQ_PREFIX + "context_encoder.norm." + name[len("pre_norm."):]
  return FAIRSEQ_PREFIX + name


def _hf_name(name: str) -> str:
  return "model." + name


def _params_from_torch(tensors: Mapping[str, np.ndarray], config: EATConfig) -> dict[str, Any]:
  """Flax params from float32 arrays under neutral names (shapes already checked)."""
  d = config.embed_dim
  ln = lambda name: {"scale": tensors[name + ".weight"], "bias": tensors[name + ".bias"]}
  dense = lambda w, b: {"kernel": np.ascontiguousarray(w.T), "bias": b}
  params = {
      "patch_embed": {"kernel": np.ascontiguousarray(tensors["local_encoder.proj.weight"].transpose(2, 3, 1, 0)),
                      "bias": tensors["local_encoder.proj.bias"]},
      "positions": tensors["fixed_positional_encoder.positions"][0],
      "cls_token": tensors["extra_tokens"],
      "pre_norm": ln("pre_norm"),
  }
  for i in range(config.depth):
    b = f"blocks.{i}."
    qkv_w, qkv_b = tensors[b + "attn.qkv.weight"], tensors[b + "attn.qkv.bias"]
    attn = {f"{n}_proj": dense(qkv_w[j * d:(j + 1) * d], qkv_b[j * d:(j + 1) * d]) for j, n in enumerate("qkv")}
    attn["out_proj"] = dense(tensors[b + "attn.proj.weight"], tensors[b + "attn.proj.bias"])
    params[f"blocks_{i}"] = {
        "attn": attn,
        "norm1": ln(b + "norm1"),
        "mlp": {"fc1": dense(tensors[b + "mlp.fc1.weight"], tensors[b + "mlp.fc1.bias"]),
                "fc2": dense(tensors[b + "mlp.fc2.weight"], tensors[b + "mlp.fc2.bias"])},
        "norm2": ln(b + "norm2"),
    }
  return jax.tree.map(jnp.asarray, params)


def _params_to_torch(params: Mapping[str, Any], config: EATConfig) -> dict[str, np.ndarray]:
  """The inverse of `_params_from_torch`: PyTorch-layout float32 arrays under neutral names."""
  p = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
  ln = lambda name, tree: {name + ".weight": tree["scale"], name + ".bias": tree["bias"]}  # noqa: E731
  linear = lambda name, tree: {name + ".weight": np.ascontiguousarray(tree["kernel"].T),  # noqa: E731
                               name + ".bias": tree["bias"]}
  out = {"local_encoder.proj.weight": np.ascontiguousarray(p["patch_embed"]["kernel"].transpose(3, 2, 0, 1)),
         "local_encoder.proj.bias": p["patch_embed"]["bias"],
         "extra_tokens": p["cls_token"],
         "fixed_positional_encoder.positions": p["positions"][None],
         **ln("pre_norm", p["pre_norm"])}
  for i in range(config.depth):
    b, block = f"blocks.{i}.", p[f"blocks_{i}"]
    attn = block["attn"]
    out[b + "attn.qkv.weight"] = np.concatenate([attn[f"{n}_proj"]["kernel"].T for n in "qkv"])
    out[b + "attn.qkv.bias"] = np.concatenate([attn[f"{n}_proj"]["bias"] for n in "qkv"])
    out.update(linear(b + "attn.proj", attn["out_proj"]))
    out.update(ln(b + "norm1", block["norm1"]))
    out.update(ln(b + "norm2", block["norm2"]))
    out.update(linear(b + "mlp.fc1", block["mlp"]["fc1"]))
    out.update(linear(b + "mlp.fc2", block["mlp"]["fc2"]))
  return out


def to_fairseq_state_dict(params: Mapping[str, Any], config: EATConfig) -> dict[str, np.ndarray]:
  """Encoder params as fairseq `model` (or `_ema`) entries, NumPy float32: the inverse of the converter."""
  return {_fairseq_name(name): value for name, value in _params_to_torch(params, config).items()}


def _convert(state_dict: Mapping[str, Any], config: EATConfig, rename, ignored_prefixes: tuple[str, ...],
             source: str) -> dict[str, Any]:
  layout = _torch_layout(config)
  ignored = [k for k in state_dict if k.startswith(ignored_prefixes)] if ignored_prefixes else []
  converted.check_state_dict(state_dict, {rename(n): s for n, s in layout.items()}, source=source,
                                 ignore=set(ignored))
  arrays = converted.state_dict_to_numpy({n: state_dict[rename(n)] for n in layout})
  return _params_from_torch({n: a.astype(np.float32) for n, a in arrays.items()}, config)


def convert_fairseq_state_dict(state_dict: Mapping[str, Any], config: EATConfig,
                               source: str = "fairseq state_dict") -> dict[str, Any]:
  """Flax params from the fairseq pretraining `model` state_dict (student encoder only).

  The CNN decoder (`modality_encoders.IMAGE.decoder.*`) and the EMA teacher (`_ema`) are ignored; any
  other missing, extra or mis-shaped tensor raises `CheckpointError`.
  """
  return _convert(state_dict, config, _fairseq_name, FAIRSEQ_IGNORED_PREFIXES, source)


def convert_hf_state_dict(state_dict: Mapping[str, Any], config: EATConfig,
                          source: str = "HF state_dict") -> dict[str, Any]:
  """Flax params from the HuggingFace port's tensors (`model.*` names); strict."""
  return _convert(state_dict, config, _hf_name, (), source)


FAIRSEQ_DECODER_PREFIX = FAIRSEQ_PREFIX + "decoder."
FAIRSEQ_TEACHER = "_ema"  # the EMA teacher's tensors, a nested dict under the student's encoder key names


@dataclasses.dataclass(frozen=True)
class FairseqPretraining:
  """Everything a fairseq EAT pretraining `.pt` holds for pre-training, as Flax params.

  Attributes:
    config: the encoder architecture (student and teacher).
    cfg: the checkpoint's fairseq cfg (plain nested dict), for the pre-training settings.
    student: the student encoder's params (what `load` returns; what fine-tuning starts from).
    teacher: the EMA teacher's params (`_ema`), same tree as `student`.
    decoder_config: the CNN decoder's architecture.
    decoder: the decoder's params (`asd_jax.models.eat_decoder.Decoder`).
  """

  config: EATConfig
  cfg: dict[str, Any]
  student: Any
  teacher: Any
  decoder_config: Any
  decoder: Any


def convert_fairseq_pretraining(state_dict: Mapping[str, Any], cfg: Mapping[str, Any], config: EATConfig,
                                source: str = "fairseq state_dict") -> FairseqPretraining:
  """Student, `_ema` teacher and CNN decoder from a fairseq `model` state_dict, all strict.

  Every top-level tensor must be a student encoder or decoder tensor of the expected shape, `_ema` must be
  present and hold exactly the encoder tensors; anything missing, extra or mis-shaped raises
  `CheckpointError` listing all of it.
  """
  from asd_jax.models import eat_decoder  # pre-training only

  model = cfg["model"] if isinstance(cfg.get("model", None), Mapping) else cfg
  try:
    decoder_config = eat_decoder.DecoderConfig.from_fairseq_cfg(model["modalities"]["image"]["decoder"])
  except (KeyError, TypeError, ValueError) as e:
    raise CheckpointError(source, problems=[f"no usable CNN decoder settings: {_reason(e)}"]) from e
  encoder = {_fairseq_name(n): shape for n, shape in _torch_layout(config).items()}
  decoder = {FAIRSEQ_DECODER_PREFIX + n: shape
             for n, shape in eat_decoder.torch_layout(decoder_config, config.embed_dim).items()}
  teacher = state_dict.get(FAIRSEQ_TEACHER)
  if not isinstance(teacher, Mapping):
    raise CheckpointError(source, problems=[f"no {FAIRSEQ_TEACHER!r} teacher tensors (found {type(teacher).__name__}); "
                                            "a pretraining checkpoint written with the EMA teacher is needed"])
  converted.check_state_dict({k: v for k, v in state_dict.items() if k != FAIRSEQ_TEACHER},
                                 {**encoder, **decoder}, source=source)
  return FairseqPretraining(
      config=config, cfg=dict(cfg),
      student=_convert(state_dict, config, _fairseq_name, (FAIRSEQ_DECODER_PREFIX, FAIRSEQ_TEACHER), source),
      teacher=_convert(teacher, config, _fairseq_name, (), f"{source} [{FAIRSEQ_TEACHER}]"),
      decoder_config=decoder_config,
      decoder=eat_decoder.convert_state_dict(state_dict, decoder_config, config.embed_dim,
                                             prefix=FAIRSEQ_DECODER_PREFIX, source=source))


def ignored_fairseq_entries(state_dict: Mapping[str, Any]) -> list[str]:
  """Top-level state_dict entries the fairseq conversion skips (decoder tensors, the `_ema` teacher)."""
  return sorted(k for k in state_dict if k.startswith(FAIRSEQ_IGNORED_PREFIXES))


def _positions_rows(state_dict: Mapping[str, Any], key: str, source: str) -> int:
  if key not in state_dict or len(state_dict[key].shape) != 3:
    raise CheckpointError(source, problems=[f"no position table {key!r} of shape [1, rows, dim]"])
  return int(state_dict[key].shape[1])


MODEL_NAME = "eat"  # the model tag of converted checkpoints (converted.save_converted)


def _reason(error: Exception) -> str:
  """Why a cfg is not an EAT one (a KeyError's message is only the key)."""
  return f"cfg lacks {error}; is this an EAT checkpoint?" if isinstance(error, KeyError) else str(error)


def _read_fairseq(path: str | pathlib.Path) -> tuple[dict[str, Any], EATConfig]:
  """(checkpoint, encoder config with the checkpoint's position count) of a fairseq `.pt`."""
  checkpoint = converted.load_torch_checkpoint(path)
  if "cfg" not in checkpoint or "model" not in checkpoint:
    raise CheckpointError(str(path), problems=[f"expected a fairseq checkpoint with 'cfg' and 'model', "
                                               f"found top-level entries {sorted(checkpoint)}"])
  try:  # first: a checkpoint of another model (e.g. BEATs) is named as such, not by a missing tensor
    config = EATConfig.from_fairseq_cfg(checkpoint["cfg"])
  except (KeyError, TypeError, ValueError) as e:
    raise CheckpointError(str(path), problems=[_reason(e)]) from e
  rows = _positions_rows(checkpoint["model"], FAIRSEQ_PREFIX + "fixed_positional_encoder.positions", str(path))
  return checkpoint, dataclasses.replace(config, max_positions=rows)


def load_fairseq_checkpoint(path: str | pathlib.Path) -> tuple[EATConfig, dict[str, Any], list[str]]:
  """(config, params, ignored entries) from a fairseq `.pt`; reads only its `cfg` and `model`."""
  checkpoint, config = _read_fairseq(path)
  state_dict = checkpoint["model"]
  return config, convert_fairseq_state_dict(state_dict, config, str(path)), ignored_fairseq_entries(state_dict)


def load_fairseq_pretraining(path: str | pathlib.Path) -> FairseqPretraining:
  """Student, EMA teacher and CNN decoder of a fairseq pretraining `.pt` (e.g. `EAT-large_epoch20_pretrain.pt`),
  read strictly; use `load` for the student encoder alone."""
  checkpoint, config = _read_fairseq(path)
  return convert_fairseq_pretraining(checkpoint["model"], checkpoint["cfg"], config, str(path))


def load_hf_checkpoint(weights: str | pathlib.Path,
                       hf_config: str | pathlib.Path | None = None) -> tuple[EATConfig, dict[str, Any]]:
  """(config, params) from the HF port: a folder with `model.safetensors` + `config.json`, or a
  `.safetensors` file with its `config.json` (default: the one next to it)."""
  from safetensors.numpy import load_file

  weights = pathlib.Path(weights)
  if weights.is_dir():
    weights = weights / "model.safetensors"
  hf_config = pathlib.Path(hf_config) if hf_config else weights.parent / "config.json"
  for needed in (weights, hf_config):
    if not needed.is_file():
      raise FileNotFoundError(f"HF EAT checkpoint: {needed} not found")
  try:
    state_dict = load_file(str(weights))
  except Exception as e:  # noqa: BLE001  safetensors raises SafetensorError (and OSError) for damaged files
    raise converted.DamagedCheckpointError(str(weights), f"cannot be read as safetensors ({e}); is the file "
                                               "complete?") from e
  rows = _positions_rows(state_dict, "model.fixed_positional_encoder.positions", str(weights))
  try:
    config = EATConfig.from_hf_config(json.loads(hf_config.read_text()), max_positions=rows)
  except UnicodeDecodeError as e:
    raise converted.DamagedCheckpointError(str(hf_config), "is not a JSON text file") from e
  except (KeyError, TypeError, ValueError) as e:
    raise CheckpointError(str(hf_config), problems=[_reason(e)]) from e
  return config, convert_hf_state_dict(state_dict, config, str(weights))


def load_converted(directory: str | pathlib.Path) -> tuple[EATConfig, dict[str, Any]]:
  """(config, params) from a directory written by `save_converted`; the tree is checked against the module."""
  config_dict, params = converted.restore_converted(directory, MODEL_NAME)
  config = EATConfig(**config_dict)
  fbank = jax.ShapeDtypeStruct((1, config.patch_size, config.num_mel_bins), jnp.float32)
  expected = converted.flatten_params(jax.eval_shape(EAT(config).init, jax.random.key(0), fbank)["params"])
  converted.check_state_dict(converted.flatten_params(params), {k: v.shape for k, v in expected.items()},
                                 source=str(directory))
  return config, jax.tree.map(jnp.asarray, params)


def save_converted(directory: str | pathlib.Path, config: EATConfig, params: Any) -> pathlib.Path:
  """Writes params (Orbax) and the config (JSON) so that `load(directory)` reads them back."""
  return converted.save_converted(directory, params, MODEL_NAME, config.to_dict())


def read_checkpoint(path: str | pathlib.Path, hf_config: str | pathlib.Path | None = None
                    ) -> tuple[EATConfig, dict[str, Any], list[str]]:
  """Like `load`, also returning the checkpoint entries that were deliberately ignored."""
  path = pathlib.Path(path)
  if converted.looks_converted(path) and not (path / "model.safetensors").is_file():
    return (*load_converted(path), [])
  if path.suffix == ".pt":
    return load_fairseq_checkpoint(path)
  if path.suffix == ".safetensors" or (path / "model.safetensors").is_file():
    return (*load_hf_checkpoint(path, hf_config), [])
  raise CheckpointError(str(path), problems=[
      "not an EAT checkpoint: expected a converted directory (config.json + params/), a fairseq .pt, or an "
      "HF .safetensors file / folder with model.safetensors and config.json"])


def load(path: str | pathlib.Path, hf_config: str | pathlib.Path | None = None) -> tuple[EATConfig, dict[str, Any]]:
  """(config, params) from any EAT checkpoint form; `EAT(config).apply({"params": params}, fbank)`.

  `path` is a converted directory (`save_converted`), a fairseq pretraining `.pt`, or the HF port (a folder
  with `model.safetensors` and `config.json`, or a `.safetensors` file; `hf_config` overrides where its
  `config.json` is read from). Mismatching tensors raise `CheckpointError`.
  """
  config, params, _ = read_checkpoint(path, hf_config)
  return config, params
