"""Reading DCASE wav files into fixed-length mono float32 waveforms at 16 kHz.

`load_wav` reads with soundfile, mixes multi-channel audio down to mono (channel mean), resamples
other rates to the target with `scipy.signal.resample_poly` (polyphase FIR, Kaiser window; a
warning names the file, or `strict=True` makes it an error), and pads or truncates to a fixed
number of samples. Padding repeats the clip (`pad="repeat"`, default: keeps the machine's
stationary sound) or appends zeros (`pad="zero"`). Truncation keeps the beginning. Unreadable,
empty or silent-length files raise `WavError` naming the file.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
import scipy.signal
import soundfile
from absl import logging

SAMPLE_RATE = 16_000
DURATION_S = 10.0
PAD_MODES = ("repeat", "zero")


class WavError(ValueError):
  """A wav file that cannot be turned into the requested waveform."""


def resample(wav: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
  """Polyphase resampling along the last axis. wav: [..., samples] -> [..., samples']."""
  if orig_rate == target_rate:
    return wav
  g = math.gcd(int(orig_rate), int(target_rate))
  return scipy.signal.resample_poly(wav, target_rate // g, orig_rate // g, axis=-1)


def fix_length(wav: np.ndarray, num_samples: int, pad: str = "repeat") -> np.ndarray:
  """Pads (repeat or zero) or truncates (keep the start). wav: [samples] -> [num_samples]."""
  if pad not in PAD_MODES:
    raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
  n = wav.shape[-1]
  if n >= num_samples:
    return wav[..., :num_samples]
  if n == 0:
    raise ValueError("cannot pad an empty waveform")
  if pad == "repeat":
    return np.tile(wav, -(-num_samples // n))[..., :num_samples]
  return np.pad(wav, (0, num_samples - n))


_warned_rates: set[int] = set()


def load_wav(path: str | pathlib.Path, *, sample_rate: int = SAMPLE_RATE,
             duration_s: float | None = DURATION_S, pad: str = "repeat",
             strict: bool = False) -> np.ndarray:
  """Reads one wav -> float32 [samples] at `sample_rate` (samples = duration_s * rate).

  Args:
    path: wav file.
    sample_rate: output rate in Hz; other rates are resampled (error if `strict`).
    duration_s: output length in seconds, None to keep the (resampled) length.
    pad: "repeat" or "zero" for clips shorter than `duration_s`.
    strict: raise WavError instead of resampling a file at another rate.

  Raises:
    WavError: naming the file, for unreadable, empty, or (strict) wrongly sampled files.
  """
  path = pathlib.Path(path)
  try:
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
  except (soundfile.LibsndfileError, RuntimeError, OSError) as e:
    raise WavError(f"{path}: cannot read as audio: {e}") from e
  if data.shape[0] == 0:
    raise WavError(f"{path}: empty audio (0 samples)")
  wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
  if rate != sample_rate:
    if strict:
      raise WavError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz")
    if rate not in _warned_rates:
      _warned_rates.add(rate)
      logging.warning("%s: resampling %d Hz -> %d Hz (resample_poly); further files at "
                      "%d Hz are resampled silently", path, rate, sample_rate, rate)
    wav = resample(wav, rate, sample_rate)
  if duration_s is not None:
    wav = fix_length(wav, int(round(duration_s * sample_rate)), pad)
  return np.ascontiguousarray(wav, dtype=np.float32)
