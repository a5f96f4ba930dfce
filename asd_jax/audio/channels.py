r"""The channel policy: how a multi-channel recording becomes the one waveform a model reads.

DCASE 2026 Task 2 records every clip on two channels: channel 0 is a microphone near the machine, channel 1 a
far one that hears more of the hall's noise (the official baseline's README, nttcslab/dcase2023_task2_baseline_ae:
"near-mic (in the left channel) and far-mic (in the right channel)"; the 2020-2025 releases are mono). Config
field `data.channels` picks one of

| policy   | input channels | output                                                                        |
| -------- | -------------- | ----------------------------------------------------------------------------- |
| `near`   | any            | channel 0 (a mono file: its one channel). The official 2026 baseline's input.  |
| `far`    | exactly 2      | channel 1                                                                     |
| `mean`   | any            | the mean of all channels (a mono file: itself); every reader's behaviour      |
|          |                | before this field existed (`LEGACY`)                                          |
| `cancel` | exactly 2      | the near channel with the part linearly predictable from the far channel      |
|          |                | removed, per frequency (below)                                                |

`far` and `cancel` mean "the far microphone" only on a two-channel near/far recording; on a mono file, or on an
8-microphone MIMII array (whose channel 1 is a neighbour of channel 0 on a 68 mm circle, not a far microphone),
they are errors rather than a guess.

Default (`DEFAULT = "near"`, the project's choice): channel 0 of any multi-channel file. On 2026 data it is the
official baseline's input; on MIMII's 8-channel originals it is the channel MIMII's own baseline reads
(MIMII-hitachi/mimii_baseline, `demux_wav(wav_name, channel=0)`); on mono data (every DCASE release 2020-2025) it
is the identity, so nothing changes there. Averaging (`mean`) instead mixes the near machine sound with the far
noise, and on an array it comb-filters the machine through the inter-microphone delays.

Cancellation (`cancel`): with C [freq, frames] and F the STFTs of the near and far channels of one clip,

    H(f) = sum_t C(f, t) conj(F(f, t)) / (sum_t |F(f, t)|^2 + lambda),    Y = C - H F,

and Y goes back to a waveform (`cancel`). H is the per-frequency least-squares transfer function from the far
channel to the near one, estimated on the clip itself: noise that reaches both microphones through fixed
paths is predictable from the far channel and removed; the machine, much weaker at the far microphone, is
mostly not (the part of it that the far channel does carry is removed too, in proportion to its share of the
far channel's power in each bin). Settings (`CANCEL_STFT`, the project's choices):
  * Hann window (periodic) of 4096 samples (256 ms at 16 kHz), hop 1024 (75 % overlap), scipy.signal.stft/istft.
    One complex gain per bin models a path difference only if that difference is short against the window:
    for a pure delay of d samples the best one-tap model leaves a fraction (4 pi^2 / 3) (d / N)^2 of the noise
    (small d / N, Hann window of N samples; `delay_residual_fraction` gives the exact value). Microphones a few
    metres apart differ by up to ~10 ms (160 samples): by that bound 256 ms windows leave 2 % (-17 dB) of such a
    noise, 64 ms windows 30 % (-5 dB); on the waveform, after overlap-add, the residual is lower still (-22 and
    -11 dB on 2 s of white noise). A 6 s clip (the shortest of the 2026 evaluation set) still gives about 95
    frames (23 window lengths) to estimate each H(f); BENCHMARKS.md measures other windows.
  * Hann at 75 % overlap is a tight frame (sum of the squared shifted windows is constant), so istft (weighted
    overlap-add) is the exact inverse of stft and never amplifies: the waveform's residual energy is at most
    the STFT residual's (scaled by the same frame constant as the near channel's), which is what the tests bound.
  * lambda = 1e-6 x (mean over bins of sum_t |F|^2) + the smallest positive float64: a bin whose far energy is
    60 dB or more below the average bin gets its H shrunk towards 0 (a bin of silence in the far channel would
    otherwise divide noise by noise); a silent far channel gives H = 0 and Y = the near channel.
Computed in float64 and returned as float32, the same length as the input (an input shorter than the window is
zero-padded to one window and cut back).

Shapes: waveforms are channel-first, `x: [channels, samples]` (mono: `[1, samples]`), as `asd_jax.audio.wav`
reads them; every function returns `[samples]` float32.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.signal

NEAR, FAR, MEAN, CANCEL = "near", "far", "mean", "cancel"
POLICIES = (NEAR, FAR, MEAN, CANCEL)
DEFAULT = NEAR  # project choice, see the module docstring
LEGACY = MEAN  # what every reader did before `data.channels` existed; a saved config without the field read this
NEAR_CHANNEL, FAR_CHANNEL = 0, 1  # DCASE 2026: channel 0 near the machine, channel 1 far


class ChannelError(ValueError):
  """A recording whose channels do not fit the policy, or an unknown policy."""


@dataclasses.dataclass(frozen=True)
class StftSettings:
  """The STFT of the cancellation (see the module docstring)."""

  nperseg: int = 4096
  hop: int = 1024
  window: str = "hann"
  relative_floor: float = 1e-6  # lambda = relative_floor * mean_f sum_t |F|^2 (+ the smallest float64)


CANCEL_STFT = StftSettings()


def check_policy(policy: str) -> str:
  """`policy` if it is one of POLICIES, else ChannelError naming the choices."""
  if policy not in POLICIES:
    raise ChannelError(f"unknown channel policy {policy!r}; expected one of {', '.join(POLICIES)}")
  return policy


def needs_two(policy: str) -> bool:
  """Whether `policy` needs a two-channel near/far recording (`far`, `cancel`)."""
  return check_policy(policy) in (FAR, CANCEL)


def channel_problem(policy: str, num_channels: int) -> str | None:
  """None when a recording of `num_channels` channels can be read with `policy`, else what is wrong (no path)."""
  if needs_two(policy) and num_channels != 2:
    return (f"{num_channels} channel(s), but channel policy {policy!r} needs exactly 2 (channel 0 near the "
            f"machine, channel 1 far); use 'near' or 'mean' for {'mono' if num_channels == 1 else 'such'} data")
  if num_channels < 1:
    return "no channel"
  return None


def apply(x: np.ndarray, policy: str, *, stft: StftSettings = CANCEL_STFT) -> np.ndarray:
  """`x [channels, samples]` -> `[samples]` float32 under `policy` (see the module docstring).

  Raises:
    ChannelError: an unknown policy, or a channel count the policy cannot read (`channel_problem`).
  """
  x = np.asarray(x)
  if x.ndim != 2:
    raise ChannelError(f"expected a [channels, samples] array, got shape {x.shape}")
  problem = channel_problem(policy, x.shape[0])
  if problem:
    raise ChannelError(problem)
  if policy == NEAR:
    out = x[NEAR_CHANNEL]
  elif policy == FAR:
    out = x[FAR_CHANNEL]
  elif policy == MEAN:
    out = x[0] if x.shape[0] == 1 else x.mean(axis=0)
  else:
    out = cancel(x[NEAR_CHANNEL], x[FAR_CHANNEL], stft=stft)
  return np.ascontiguousarray(out, dtype=np.float32)


def _stft(x: np.ndarray, s: StftSettings) -> np.ndarray:
  return scipy.signal.stft(x, window=s.window, nperseg=s.nperseg, noverlap=s.nperseg - s.hop, boundary="zeros",
                           padded=True)[2]


def transfer_function(near_stft: np.ndarray, far_stft: np.ndarray, *, relative_floor: float) -> np.ndarray:
  """`C, F [freq, frames]` complex -> `H [freq]`: the regularised least-squares gain from far to near per bin."""
  far_power = np.sum(np.abs(far_stft) ** 2, axis=-1)
  lam = relative_floor * float(np.mean(far_power)) + np.finfo(np.float64).tiny
  return np.sum(near_stft * np.conj(far_stft), axis=-1) / (far_power + lam)


def cancel(near: np.ndarray, far: np.ndarray, *, stft: StftSettings = CANCEL_STFT) -> np.ndarray:
  """`near, far [samples]` -> `[samples]` float32: the near channel minus its least-squares prediction from the far
  channel, per STFT bin (H estimated on these samples; see the module docstring)."""
  near = np.asarray(near, np.float64)
  far = np.asarray(far, np.float64)
  if near.shape != far.shape or near.ndim != 1:
    raise ChannelError(f"near and far must be equal-length 1-D waveforms, got {near.shape} and {far.shape}")
  n = near.shape[0]
  if n == 0:
    raise ChannelError("cannot cancel an empty waveform")
  if n < stft.nperseg:  # zeros add nothing to either sum of H; scipy would shorten the window instead
    near, far = (np.pad(x, (0, stft.nperseg - n)) for x in (near, far))
  c, f = _stft(near, stft), _stft(far, stft)
  h = transfer_function(c, f, relative_floor=stft.relative_floor)
  y = c - h[:, None] * f
  _, out = scipy.signal.istft(y, window=stft.window, nperseg=stft.nperseg, noverlap=stft.nperseg - stft.hop,
                              boundary=True)
  return np.ascontiguousarray(out[:n], dtype=np.float32)


def delay_residual_fraction(delay: int, nperseg: int = CANCEL_STFT.nperseg) -> float:
  """The fraction of a white noise's STFT energy that one complex gain per bin cannot predict when the two channels
  differ by a pure delay of `delay` samples: sum_m (w(m) - w(m - delay))^2 / sum_m w(m)^2 for the periodic Hann
  window w of `nperseg` samples (zero outside it). ~ (4 pi^2 / 3) (delay / nperseg)^2 for small delays.

  It bounds the expected residual of `cancel` on such a pair (the least-squares gain does at least as well as the
  bin's exact phase factor, whose error is this window difference); a filter sum_k h_k delta(t - k) gives
  sum_k h_k^2 D(k) / (sum_k h_k^2 W) by the same argument (`filter_residual_fraction`).
  """
  return filter_residual_fraction(np.eye(1, abs(int(delay)) + 1, abs(int(delay)))[0], nperseg)


def filter_residual_fraction(h: np.ndarray, nperseg: int = CANCEL_STFT.nperseg) -> float:
  """`h [taps]` -> the expected fraction of the near channel's STFT energy left by one gain per bin when near =
  h * far and far is white noise: sum_k h_k^2 D(k) / (sum_k h_k^2 W), D(k) = sum_m (w(m) - w(m - k))^2,
  W = sum_m w(m)^2, w the periodic Hann window of `nperseg` samples (see `delay_residual_fraction`)."""
  h = np.asarray(h, np.float64)
  w = scipy.signal.get_window("hann", nperseg)
  padded = np.concatenate([w, np.zeros(h.size)])
  d = np.array([np.sum((padded - np.roll(padded, k)) ** 2) for k in range(h.size)])
  return float(np.sum(h**2 * d) / (np.sum(h**2) * np.sum(w**2)))
