"""Reading DCASE wav files into fixed-length mono float32 waveforms at 16 kHz.

`load_wav` reads with soundfile, turns the channels into one waveform with a channel policy
(`channels`: `near`, `far`, `mean` or `cancel`, see `asd_jax.audio.channels`; a recording the policy cannot
read, e.g. a mono file with `cancel`, raises `WavError` naming the file), resamples other rates to the target
with `scipy.signal.resample_poly` (polyphase FIR, Kaiser window; a warning names the file, or `strict=True`
makes it an error), and pads or truncates to a fixed number of samples. Padding repeats the clip
(`pad="repeat"`, default: keeps the machine's stationary sound) or appends zeros (`pad="zero"`). Truncation
keeps the beginning. Unreadable or empty files, and files with NaN or infinite samples (a damaged float wav),
raise `WavError` naming the file. `read_channels` gives all channels, resampled, for callers that cut a
recording first (`asd_jax.audio.windows`); `file_format` reads only a header (rate, channels, sample format).

Where the policy acts: on exactly the samples the model reads, after resampling and fixing the length, so a
clip-length window of a recording gets the same waveform whether it is read here or cut by `windows.split`.
`near`, `far` and `mean` act sample by sample and commute with resampling and cutting; they are applied first
(cheaper, and `mean` gives the same numbers as before the policy existed). `cancel` estimates its filter on
the samples it is given, so it runs last, on the resampled and cut (or padded) near/far pair.

Clip length (the project's own rule): padding a clip much shorter than the model's clip turns it into
an artificial periodic signal. A clip shorter than `SHORT_FRACTION` (half) of the requested length is
padded with a warning naming it (more of the model's input is then repetition than recording); one
shorter than `MIN_FRACTION` (a tenth) is an error: the model would see ten or more copies of the same
sound, and a 1-sample clip would become a constant. Real DCASE clips (6-18 s in the 2023-2025 sets) never
come near either limit for the report's 10 s clips. `check_duration` applies the rule to a file's header
length too, so the dataset scan reports short clips before any compute.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any

import numpy as np
import scipy.signal
import soundfile
from absl import logging

from asd_jax.audio import channels as channels_lib

SAMPLE_RATE = 16_000
DURATION_S = 10.0
PAD_MODES = ("repeat", "zero")
SHORT_FRACTION = 0.5  # shorter than this fraction of the clip length: padded with a warning
MIN_FRACTION = 0.1  # shorter than this fraction: an error (see the module docstring)


class WavError(ValueError):
  """A wav file that cannot be turned into the requested waveform."""


class NonFiniteWavError(WavError):
  """A wav file holding NaN or infinite samples (a damaged float wav)."""


def resample(wav: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
  """Polyphase resampling along the last axis. wav: [..., samples] -> [..., samples']."""
  if orig_rate == target_rate:
    return wav
  g = math.gcd(int(orig_rate), int(target_rate))
  return scipy.signal.resample_poly(wav, target_rate // g, orig_rate // g, axis=-1)


def fix_length(wav: np.ndarray, num_samples: int, pad: str = "repeat") -> np.ndarray:
  """Pads (repeat or zero) or truncates (keep the start) the last axis. wav: [..., samples] -> [..., num_samples]."""
  if pad not in PAD_MODES:
    raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
  n = wav.shape[-1]
  if n >= num_samples:
    return wav[..., :num_samples]
  if n == 0:
    raise ValueError("cannot pad an empty waveform")
  if pad == "repeat":
    return np.tile(wav, -(-num_samples // n))[..., :num_samples]
  return np.pad(wav, [(0, 0)] * (wav.ndim - 1) + [(0, num_samples - n)])


def check_duration(path: str | pathlib.Path, seconds: float, duration_s: float) -> str | None:
  """Applies the clip-length rule to a recording of `seconds` read as clips of `duration_s` seconds.

  Returns None for a long enough recording, a warning text (naming `path`) for a short one that will be
  padded; raises WavError below `MIN_FRACTION * duration_s`.
  """
  if seconds >= SHORT_FRACTION * duration_s:
    return None
  if seconds < MIN_FRACTION * duration_s:
    raise WavError(f"{path}: {seconds:.3g} s long, less than {MIN_FRACTION:g} of the {duration_s:g} s clip "
                   "length: padded, it would be 90 % padding (a truncated or damaged recording?)")
  return (f"{path}: {seconds:.3g} s long, less than half the {duration_s:g} s clip length; it is padded "
          "to the clip length")


@dataclasses.dataclass(frozen=True)
class FileFormat:
  """What an audio file's header says: sample rate (Hz), channel count, sample format (soundfile's subtype, e.g.
  "PCM_16"; every format is read as float32 in [-1, 1])."""

  sample_rate: int
  channels: int
  subtype: str


def _header(path: str | pathlib.Path) -> Any:
  """soundfile's header of `path`; WavError naming the file when it cannot be read as audio."""
  try:
    return soundfile.info(str(path))
  except (soundfile.LibsndfileError, RuntimeError, OSError) as e:
    raise WavError(f"{path}: cannot read as audio: {e}") from e


def file_format(path: str | pathlib.Path) -> FileFormat:
  """The header of `path` (nothing else is read); WavError naming the file when it cannot be read as audio."""
  info = _header(path)
  return FileFormat(sample_rate=int(info.samplerate), channels=int(info.channels), subtype=str(info.subtype))


def duration_s(path: str | pathlib.Path) -> float:
  """The length of `path` in seconds from its header (nothing else is read); WavError naming the file when it
  cannot be read as audio."""
  info = _header(path)
  return float(info.frames) / float(info.samplerate)


_warned_rates: set[int] = set()
_warned_short: set[str] = set()
_MAX_SHORT_WARNINGS = 20  # per process; the dataset scan lists every short clip of a dataset at once


def _read(path: pathlib.Path) -> tuple[np.ndarray, int]:
  """(float32 [channels, samples], rate) of a file, checked: readable, not empty, finite."""
  try:
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
  except (soundfile.LibsndfileError, RuntimeError, OSError) as e:
    raise WavError(f"{path}: cannot read as audio: {e}") from e
  if data.shape[0] == 0:
    raise WavError(f"{path}: empty audio (0 samples)")
  check_finite(path, data, rate)
  return data.T, rate


# Sample formats that store integers (soundfile subtypes): they cannot hold NaN or inf, so a finiteness check
# needs no decoding (`may_hold_non_finite`). Every DCASE release is 16-bit PCM.
INTEGER_SUBTYPES = ("PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "ULAW", "ALAW")


def may_hold_non_finite(subtype: str) -> bool:
  """Whether a file of this soundfile subtype can hold NaN or inf samples (a float wav, or a lossy codec)."""
  return subtype not in INTEGER_SUBTYPES


def check_finite(path: str | pathlib.Path, data: np.ndarray, rate: int) -> None:
  """Raises `NonFiniteWavError` naming `path`, the count and the first time when `data` [samples, channels] holds
  NaN or inf samples."""
  finite = np.isfinite(data)
  if not finite.all():
    first = int(np.argmin(finite.all(axis=1)))
    raise NonFiniteWavError(f"{path}: {int(finite.size - finite.sum())} non-finite sample value(s) (NaN or inf), "
                            f"the first at {first / rate:.3f} s; the recording is damaged")


def _check_channels(path: pathlib.Path, policy: str, num_channels: int) -> None:
  try:
    problem = channels_lib.channel_problem(policy, num_channels)
  except channels_lib.ChannelError as e:
    raise WavError(f"{path}: {e}") from e
  if problem:
    raise WavError(f"{path}: {problem}")


def _resample(path: pathlib.Path, wav: np.ndarray, rate: int, sample_rate: int, strict: bool) -> np.ndarray:
  if rate == sample_rate:
    return wav
  if strict:
    raise WavError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz")
  if rate not in _warned_rates:
    _warned_rates.add(rate)
    logging.warning("%s: resampling %d Hz -> %d Hz (resample_poly); further files at "
                    "%d Hz are resampled silently", path, rate, sample_rate, rate)
  return resample(wav, rate, sample_rate)


def read_channels(path: str | pathlib.Path, *, sample_rate: int = SAMPLE_RATE, strict: bool = False,
                  channels: str | None = None) -> np.ndarray:
  """Reads one file -> float32 [channels, samples] at `sample_rate`, every channel, the whole recording.

  `channels` (a policy) only checks that the file can be read with it (an error naming the file otherwise);
  the caller applies it (`channels_lib.apply`) to what it cuts from the recording.

  Raises:
    WavError: naming the file, for unreadable, empty, non-finite, wrongly sampled (`strict`) files, and a channel
      count the policy cannot read.
  """
  path = pathlib.Path(path)
  data, rate = _read(path)
  if channels is not None:
    _check_channels(path, channels, data.shape[0])
  return np.ascontiguousarray(_resample(path, data, rate, sample_rate, strict), dtype=np.float32)


def load_wav(path: str | pathlib.Path, *, sample_rate: int = SAMPLE_RATE,
             duration_s: float | None = DURATION_S, pad: str = "repeat",
             strict: bool = False, channels: str = channels_lib.DEFAULT) -> np.ndarray:
  """Reads one wav -> float32 [samples] at `sample_rate` (samples = duration_s * rate).

  Args:
    path: wav file.
    sample_rate: output rate in Hz; other rates are resampled (error if `strict`).
    duration_s: output length in seconds, None to keep the (resampled) length.
    pad: "repeat" or "zero" for clips shorter than `duration_s`.
    strict: raise WavError instead of resampling a file at another rate.
    channels: the channel policy (`asd_jax.audio.channels`): "near" (channel 0, default), "far", "mean", "cancel".

  Raises:
    WavError: naming the file, for unreadable, empty, non-finite, too short (see `check_duration`),
      (strict) wrongly sampled files, and files whose channel count the policy cannot read (a mono file with
      "far" or "cancel").
  """
  path = pathlib.Path(path)
  data, rate = _read(path)
  _check_channels(path, channels, data.shape[0])
  late = channels == channels_lib.CANCEL  # see the module docstring: the filter is estimated on what is read
  wav = data if late else channels_lib.apply(data, channels)
  wav = _resample(path, wav, rate, sample_rate, strict)
  if duration_s is not None:
    warning = check_duration(path, data.shape[1] / rate, duration_s)
    if warning and str(path) not in _warned_short and len(_warned_short) < _MAX_SHORT_WARNINGS:
      _warned_short.add(str(path))
      logging.warning("%s", warning)
    wav = fix_length(wav, int(round(duration_s * sample_rate)), pad)
  if late:
    wav = channels_lib.apply(wav, channels)
  return np.ascontiguousarray(wav, dtype=np.float32)
