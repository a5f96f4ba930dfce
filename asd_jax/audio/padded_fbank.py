"""The fbank of zero-padded clips, as if each clip had been given alone: EAT's padding of short clips.

Upstream EAT computes the Kaldi fbank of a whole clip, then appends zero log-mel frames up to
`target_length` (1024) or keeps the first 1024 frames. A batch of waveforms needs one length, so the
pre-training corpus zero-pads short clips and reports `valid_samples` per row
(`asd_jax.data.corpus`). `fbank_of_padded` turns such a batch into exactly the fbank of each clip on its
own: the waveform mean (EAT subtracts it) is taken over the real samples only, and every frame that
reaches past the real samples becomes a zero log-mel frame, as EAT's padding frames are.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from asd_jax.audio import fbank as fb


def num_frames(valid_samples: jax.Array, config: fb.FbankConfig) -> jax.Array:
  """Fbank frames (snip_edges) of clips of `valid_samples` samples. int [batch] -> int [batch]"""
  full = 1 + (valid_samples - config.frame_length) // config.frame_shift
  return jnp.where(valid_samples >= config.frame_length, full, 0)


@functools.partial(jax.jit, static_argnames="config")
def fbank_of_padded(wav: jax.Array, valid_samples: jax.Array, config: fb.FbankConfig = fb.EAT_FBANK) -> jax.Array:
  """Normalised fbank of each row's first `valid_samples` samples, padded/cropped as `config` says.

  Args:
    wav: `[batch, samples]` float waveform; samples past `valid_samples` are ignored (any value).
    valid_samples: `[batch]` int, real samples per row (at most `samples`).
    config: front-end settings (`EAT_FBANK`: zero log-mel frames up to 1024).

  Returns:
    `[batch, frames, num_mel_bins]` float32 equal to `fbank(wav[i:i+1, :valid_samples[i]], config)` row by row
    (frames = `config.output_frames(samples)`; without a `target_length` the padded frames stay zeros
    before normalisation).
  """
  wav = jnp.asarray(wav, jnp.float32)
  valid_samples = jnp.asarray(valid_samples, jnp.int32)
  real = jnp.arange(wav.shape[-1])[None, :] < valid_samples[:, None]  # [batch, samples]
  if config.subtract_waveform_mean:
    mean = jnp.sum(jnp.where(real, wav, 0.0), axis=-1, keepdims=True) / jnp.maximum(valid_samples[:, None], 1)
    wav = wav - mean
  wav = jnp.where(real, wav, 0.0)
  log_mel = fb.log_mel(wav, dataclasses.replace(config, subtract_waveform_mean=False))  # [batch, frames, mel]
  frames_real = jnp.arange(log_mel.shape[1])[None, :] < num_frames(valid_samples, config)[:, None]
  log_mel = jnp.where(frames_real[..., None], log_mel, 0.0)
  if config.target_length is not None:
    log_mel = fb.pad_or_crop(log_mel, config.target_length)
  return (log_mel - config.norm_mean) / (2.0 * config.norm_std)
