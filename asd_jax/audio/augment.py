"""SpecAugment-style masking of fbank features for fine-tuning (Park et al., "SpecAugment", Interspeech 2019).

`mask_bands` hides random bands of time frames and of mel bins of each clip's fbank, independently per clip: a
band's width is drawn uniformly from `0 .. max_width` and its start uniformly among the positions where it fits,
as in the paper's time and frequency masks (no time warping). Masked values become 0, which is the dataset mean
after the BEATs/EAT fbank normalisation (`asd_jax.audio.fbank`), as upstream EAT's fine-tuning masks its
normalised fbank. Pure and jittable; the randomness comes from the key only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def band_mask(rng: jax.Array, batch: int, length: int, *, count: int, max_width: int) -> jax.Array:
  """`[batch, length]` bool, True inside any of `count` random bands of width `0..max_width` per row."""
  if count <= 0 or max_width <= 0:
    return jnp.zeros((batch, length), bool)
  width_rng, start_rng = jax.random.split(rng)
  width = jax.random.randint(width_rng, (batch, count), 0, min(max_width, length) + 1)
  start = jnp.floor(jax.random.uniform(start_rng, (batch, count)) * (length - width + 1)).astype(jnp.int32)
  position = jnp.arange(length)[None, None, :]
  inside = (position >= start[..., None]) & (position < (start + width)[..., None])  # [batch, count, length]
  return jnp.any(inside, axis=1)


def mask_bands(rng: jax.Array, fbank: jax.Array, *, time_masks: int = 0, time_width: int = 0, freq_masks: int = 0,
               freq_width: int = 0) -> jax.Array:
  """`fbank [batch, frames, mel]` with `time_masks` bands of up to `time_width` frames and `freq_masks` bands of up
  to `freq_width` mel bins set to 0 in each clip."""
  batch, frames, mel = fbank.shape
  time_rng, freq_rng = jax.random.split(rng)
  hidden = (band_mask(time_rng, batch, frames, count=time_masks, max_width=time_width)[:, :, None]
            | band_mask(freq_rng, batch, mel, count=freq_masks, max_width=freq_width)[:, None, :])
  return jnp.where(hidden, jnp.zeros((), fbank.dtype), fbank)
