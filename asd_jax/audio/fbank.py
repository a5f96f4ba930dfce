"""Kaldi-compatible log-mel filterbank, batched and jittable, for the BEATs and EAT encoders.

Both encoders were trained on `torchaudio.compliance.kaldi.fbank` features; they differ only in settings
(window, waveform scale, mean removal, normalisation constants, time padding). This module computes that
fbank as one function of a `FbankConfig`: framing with `snip_edges` semantics, per-frame DC removal,
pre-emphasis, window, zero-padding to a power of two, power spectrum via `rfft`, a triangular mel filter
bank on the Kaldi mel scale (built once in NumPy, float64), log with a float32-eps floor, optional pad/crop in
time, then `(fbank - norm_mean) / (2 * norm_std)`. Dither is not supported (both encoders use 0).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

WINDOW_POVEY = "povey"  # symmetric Hann raised to the power 0.85 (Kaldi default, BEATs)
WINDOW_HANNING = "hanning"  # symmetric Hann (EAT)

_FLOAT32_EPS = float(np.finfo(np.float32).eps)  # Kaldi's log floor: log(max(energy, eps))
_LOW_FREQ_HZ = 20.0  # Kaldi default low_freq; high_freq 0 means Nyquist.


@dataclasses.dataclass(frozen=True)
class FbankConfig:
  """Settings of the Kaldi fbank front end.

  Attributes:
    sample_rate: input sampling rate, Hz.
    num_mel_bins: mel filters.
    frame_length_ms: analysis window, ms (25 ms = 400 samples at 16 kHz).
    frame_shift_ms: hop, ms (10 ms = 160 samples at 16 kHz).
    window: `'povey'` (Hann ** 0.85) or `'hanning'` (symmetric Hann).
    preemphasis: pre-emphasis coefficient; the first sample of a frame is its own predecessor.
    remove_dc_offset: subtract each frame's mean before pre-emphasis.
    waveform_scale: the waveform is multiplied by this first (2**15 for BEATs, 1 for EAT).
    subtract_waveform_mean: subtract each clip's mean sample before framing (EAT).
    norm_mean: normalised = (log-mel - norm_mean) / (2 * norm_std).
    norm_std: see `norm_mean`.
    target_length: if set, pad with zero log-mel frames at the end or crop to this many frames, before
      normalising (EAT: 1024 for 10 s clips). None keeps every frame (BEATs).
  """

  sample_rate: int = 16000
  num_mel_bins: int = 128
  frame_length_ms: float = 25.0
  frame_shift_ms: float = 10.0
  window: str = WINDOW_POVEY
  preemphasis: float = 0.97
  remove_dc_offset: bool = True
  waveform_scale: float = 2.0**15
  subtract_waveform_mean: bool = False
  norm_mean: float = 15.41663
  norm_std: float = 6.55582
  target_length: int | None = None

  @property
  def frame_length(self) -> int:
    """Window length in samples."""
    return int(self.sample_rate * self.frame_length_ms * 0.001)

  @property
  def frame_shift(self) -> int:
    """Hop in samples."""
    return int(self.sample_rate * self.frame_shift_ms * 0.001)

  @property
  def fft_size(self) -> int:
    """FFT length: the window length rounded up to a power of two (Kaldi `round_to_power_of_two`)."""
    return 1 << (self.frame_length - 1).bit_length()

  def num_frames(self, num_samples: int) -> int:
    """Frames from `num_samples` samples with `snip_edges` (no edge padding), before any pad/crop."""
    if num_samples < self.frame_length:
      return 0
    return 1 + (num_samples - self.frame_length) // self.frame_shift

  def output_frames(self, num_samples: int) -> int:
    """Frames `fbank` returns for clips of `num_samples` samples."""
    return self.target_length if self.target_length is not None else self.num_frames(num_samples)


BEATS_FBANK = FbankConfig()
EAT_FBANK = FbankConfig(window=WINDOW_HANNING, waveform_scale=1.0, subtract_waveform_mean=True,
                        norm_mean=-4.268, norm_std=4.569, target_length=1024)


def _mel(freq_hz: np.ndarray) -> np.ndarray:
  return 1127.0 * np.log1p(freq_hz / 700.0)


@functools.lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, fft_size: int, num_mel_bins: int) -> np.ndarray:
  """Kaldi's triangular mel filters as a `[fft_size // 2 + 1, num_mel_bins]` float32 matrix.

  Triangles are equally spaced on the mel scale 1127 ln(1 + f / 700) between 20 Hz and Nyquist and are
  evaluated at the FFT bin centre frequencies; the Nyquist bin gets weight 0, as in Kaldi.
  """
  nyquist = 0.5 * sample_rate
  mel_low, mel_high = _mel(np.float64(_LOW_FREQ_HZ)), _mel(np.float64(nyquist))
  delta = (mel_high - mel_low) / (num_mel_bins + 1)
  edges = mel_low + delta * np.arange(num_mel_bins + 2, dtype=np.float64)
  left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # [mel, 1]
  bin_mel = _mel(np.arange(fft_size // 2, dtype=np.float64) * sample_rate / fft_size)[None, :]
  rising = (bin_mel - left) / (centre - left)
  falling = (right - bin_mel) / (right - centre)
  weights = np.maximum(0.0, np.minimum(rising, falling))  # [mel, fft_size // 2]
  weights = np.concatenate([weights, np.zeros((num_mel_bins, 1))], axis=1)  # Nyquist bin
  return weights.T.astype(np.float32)


@functools.lru_cache(maxsize=16)
def analysis_window(window: str, length: int) -> np.ndarray:
  """The `[length]` float32 analysis window (symmetric Hann, N - 1 denominator; ** 0.85 for povey)."""
  hann = 0.5 - 0.5 * np.cos(2.0 * math.pi * np.arange(length, dtype=np.float64) / (length - 1))
  if window == WINDOW_POVEY:
    return (hann**0.85).astype(np.float32)
  if window == WINDOW_HANNING:
    return hann.astype(np.float32)
  raise ValueError(f"unknown fbank window {window!r}; expected {WINDOW_POVEY!r} or {WINDOW_HANNING!r}")


def _frames(wav: jax.Array, config: FbankConfig) -> jax.Array:
  """`wav: [batch, samples]` -> `[batch, frames, frame_length]` (snip_edges framing)."""
  num_frames = config.num_frames(wav.shape[-1])
  if num_frames < 1:
    raise ValueError(f"fbank needs at least {config.frame_length} samples per clip, got {wav.shape[-1]}")
  index = (np.arange(num_frames)[:, None] * config.frame_shift + np.arange(config.frame_length)[None, :])
  return wav[:, index]


def log_mel(wav: jax.Array, config: FbankConfig) -> jax.Array:
  """Un-normalised Kaldi log-mel energies `[batch, frames, mel]` of `wav: [batch, samples]` (float32).

  Applies `waveform_scale` and `subtract_waveform_mean` but neither padding/cropping nor normalisation.
  """
  wav = jnp.asarray(wav, jnp.float32)
  if wav.ndim != 2:
    raise ValueError(f"fbank expects wav [batch, samples], got shape {wav.shape}")
  if config.subtract_waveform_mean:
    wav = wav - jnp.mean(wav, axis=-1, keepdims=True)
  wav = wav * config.waveform_scale
  frames = _frames(wav, config)  # [batch, frames, frame_length]
  if config.remove_dc_offset:
    frames = frames - jnp.mean(frames, axis=-1, keepdims=True)
  if config.preemphasis:
    previous = jnp.concatenate([frames[..., :1], frames[..., :-1]], axis=-1)
    frames = frames - config.preemphasis * previous
  frames = frames * analysis_window(config.window, config.frame_length)
  spectrum = jnp.fft.rfft(frames, n=config.fft_size, axis=-1)  # [batch, frames, fft_size // 2 + 1]
  power = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
  filters = mel_filterbank(config.sample_rate, config.fft_size, config.num_mel_bins)
  energies = jnp.einsum("btk,km->btm", power, filters, precision=jax.lax.Precision.HIGHEST)
  return jnp.log(jnp.maximum(energies, _FLOAT32_EPS))


def pad_or_crop(log_mel_frames: jax.Array, target_length: int) -> jax.Array:
  """Pads `[batch, frames, mel]` with zero frames at the end, or crops, to `target_length` frames."""
  num_frames = log_mel_frames.shape[1]
  if num_frames >= target_length:
    return log_mel_frames[:, :target_length]
  return jnp.pad(log_mel_frames, ((0, 0), (0, target_length - num_frames), (0, 0)))


@functools.partial(jax.jit, static_argnames="config")
def fbank(wav: jax.Array, config: FbankConfig = BEATS_FBANK) -> jax.Array:
  """Normalised Kaldi fbank, ready for the encoder.

  Args:
    wav: `[batch, samples]` float waveform in [-1, 1] at `config.sample_rate`.
    config: front-end settings (`BEATS_FBANK`, `EAT_FBANK`, or a `dataclasses.replace` of them).

  Returns:
    `[batch, frames, num_mel_bins]` float32, frames = `config.output_frames(samples)`.
  """
  features = log_mel(wav, config)
  if config.target_length is not None:
    features = pad_or_crop(features, config.target_length)
  return (features - config.norm_mean) / (2.0 * config.norm_std)
