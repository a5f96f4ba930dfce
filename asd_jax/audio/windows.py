"""A recording of any length cut into the model's clips: consecutive windows of the clip length.

The rule (the project's own; it extends `asd_jax.audio.wav`'s clip-length rule to long recordings):

  - windows start at 0, clip_length, 2 clip_length, ... and do not overlap;
  - the last, partial window is kept and padded the way the front end pads a short clip (`wav.fix_length`,
    repeat padding) when it is at least `wav.SHORT_FRACTION` (half) of the clip length, and dropped otherwise:
    every window scored is then one the front end would read without a short-clip warning, and at most half
    a clip length at the end goes unscored (reported as `dropped_s`);
  - a recording shorter than one clip length is one window, padded, under `wav.check_duration`'s rule (a
    warning below half the clip length, an error below a tenth).

So a recording of exactly one clip length is one window, the clip itself, as the pipeline reads it.

A multi-channel recording (`[channels, samples]`, from `wav.read_channels`) is cut into windows first and each
window then goes through the channel policy (`asd_jax.audio.channels`), as `wav.load_wav` applies it to the one
window it reads: `cancel` estimates its filter per window, so every window's waveform is the one the pipeline
would have read from a file holding just that window.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from asd_jax.audio import channels as channels_lib
from asd_jax.audio import wav as wavlib


@dataclasses.dataclass(frozen=True)
class Windows:
  """A recording cut into clips.

  Attributes:
    wavs: [windows, clip_samples] float32, the last one padded when partial.
    starts_s: [windows] start time of each window in the recording, seconds.
    lengths_s: [windows] how much of each window is recording (the rest of a partial one is padding), seconds.
    dropped_s: seconds at the end of the recording in no window (shorter than half a clip).
  """

  wavs: np.ndarray
  starts_s: np.ndarray
  lengths_s: np.ndarray
  dropped_s: float


def split(wav: np.ndarray, clip_samples: int, sample_rate: int, *, pad: str = "repeat",
          channels: str | None = None) -> Windows:
  """Cuts `wav` (already at `sample_rate`) into windows of `clip_samples` (see the module docstring).

  `wav` is `[samples]`, or `[channels, samples]` with a channel policy `channels` applied to each window
  (ChannelError for a channel count the policy cannot read). The caller applies the short-recording rule to
  recordings shorter than one clip (`wav.check_duration`); here such a recording is simply one padded window.
  """
  if wav.ndim == 2:
    if channels is None:
      raise ValueError("a [channels, samples] recording needs a channel policy (channels=...)")
    channels_lib.check_policy(channels)
  elif wav.ndim != 1:
    raise ValueError(f"expected [samples] or [channels, samples], got shape {wav.shape}")
  n = int(wav.shape[-1])
  if n == 0:
    raise ValueError("cannot cut an empty waveform into windows")
  full, tail = divmod(n, clip_samples)
  starts = [i * clip_samples for i in range(full)]
  keep_tail = tail > 0 and (full == 0 or tail >= wavlib.SHORT_FRACTION * clip_samples)
  if keep_tail:
    starts.append(full * clip_samples)
  cut = [wavlib.fix_length(wav[..., s:s + clip_samples], clip_samples, pad) for s in starts]
  if wav.ndim == 2:
    cut = [channels_lib.apply(w, channels) for w in cut]
  wavs = np.stack(cut)
  lengths = np.minimum(n - np.asarray(starts), clip_samples)
  dropped = 0 if keep_tail else tail
  return Windows(wavs=wavs.astype(np.float32), starts_s=np.asarray(starts, np.float64) / sample_rate,
                 lengths_s=lengths.astype(np.float64) / sample_rate, dropped_s=dropped / sample_rate)
