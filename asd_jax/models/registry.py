"""Encoders by name: how to build each one, its front end, its presets and how to load its checkpoints.

Training and embedding code never imports an encoder module directly; it looks up `get(name)`, so a new
encoder is one `register` call. Encoder modules are imported on first use.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

from asd_jax.models import encoder_output as eo


@dataclasses.dataclass(frozen=True)
class EncoderEntry:
  """How to make and load one encoder family.

  Attributes:
    build: `(architecture config, dtype, **options) -> linen module` with the `EncoderOutput` contract;
      options are the fast-path switches `fused_attention` and `remat` (same maths, see the modules).
    presets: `() -> {name: architecture config}` (e.g. "base", "tiny").
    frontend: `() -> jittable wav [batch, samples] -> normalised fbank [batch, frames, mel]`.
    load: `(path) -> (architecture config, encoder params)` from a converted or released checkpoint.
    pool: default token pooling for the utterance embedding.
  """

  build: Callable[[Any, Any], nn.Module]
  presets: Callable[[], dict[str, Any]]
  frontend: Callable[..., Callable[[jax.Array], jax.Array]]  # (target_length=None) -> wav -> fbank
  load: Callable[[str], tuple[Any, Any]]
  pool: str = eo.POOL_MEAN


def _fbank_frontend(name: str, target_length: int | None = None) -> Callable[[jax.Array], jax.Array]:
  """`wav [batch, samples] -> fbank [batch, frames, 128]` with `fbank.<name>`; `target_length` replaces its
  padded/cropped frame count (None: the config's own; 0: the clip's frames rounded up to a 16-frame patch)."""
  import dataclasses

  from asd_jax.audio import fbank
  config = getattr(fbank, name)
  if target_length is None:
    return functools.partial(fbank.fbank, config=config)
  if target_length > 0:
    return functools.partial(fbank.fbank, config=dataclasses.replace(config, target_length=int(target_length)))

  def clip_frames(wav: jax.Array) -> jax.Array:
    frames = config.num_frames(wav.shape[-1])
    return fbank.fbank(wav, config=dataclasses.replace(config, target_length=-(-frames // 16) * 16))

  return clip_frames


def _beats() -> EncoderEntry:
  def build(config, dtype, **options):
    from asd_jax.models import beats
    return beats.BEATs(config, dtype, **options)

  def presets():
    from asd_jax.models import beats
    return {"base": beats.BEATS_ITER3_PLUS, "tiny": beats.BEATS_TINY}

  def load(path):
    from asd_jax.models import beats
    return beats.load(path)

  return EncoderEntry(build, presets, lambda target_length=None: _fbank_frontend("BEATS_FBANK"), load)


def _eat() -> EncoderEntry:
  def build(config, dtype, **options):
    from asd_jax.models import eat
    return eat.EAT(config, dtype, **options)

  def presets():
    from asd_jax.models import eat
    return {"base": eat.EAT_BASE, "large": eat.EAT_LARGE, "tiny": eat.EAT_TINY}

  def load(path):
    from asd_jax.models import eat
    return eat.load(path)

  return EncoderEntry(build, presets, lambda target_length=None: _fbank_frontend("EAT_FBANK", target_length), load)


_REGISTRY: dict[str, EncoderEntry] = {"beats": _beats(), "eat": _eat()}


def register(name: str, entry: EncoderEntry) -> None:
  """Adds (or replaces) an encoder family."""
  _REGISTRY[name] = entry


def get(name: str) -> EncoderEntry:
  if name not in _REGISTRY:
    raise ValueError(f"unknown encoder {name!r} (config.model.encoder); registered: {sorted(_REGISTRY)}")
  return _REGISTRY[name]


def preset(name: str, preset_name: str) -> Any:
  presets = get(name).presets()
  if preset_name not in presets:
    raise ValueError(f"encoder {name!r} has no preset {preset_name!r} (config.model.preset); "
                     f"expected one of {sorted(presets)}")
  return presets[preset_name]
