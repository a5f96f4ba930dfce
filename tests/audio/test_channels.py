"""The channel policy on known signals: selection and averaging exactly, cancellation against a derived bound."""

import numpy as np
import pytest
import scipy.signal

from asd_jax.audio import channels
from asd_jax.audio import windows

RATE = 16_000


def _noise_pair(h, n, seed):
  """far: white noise; near: h * far, cut from a longer recording (the first samples see noise before the cut)."""
  h = np.asarray(h, np.float64)
  far_full = np.random.default_rng(seed).standard_normal(n + h.size)
  return np.convolve(far_full, h)[h.size:h.size + n], far_full[h.size:]


def test_near_far_mean_select_and_average_exactly():
  x = np.random.default_rng(0).uniform(-1, 1, (2, 1000)).astype(np.float32)
  np.testing.assert_array_equal(channels.apply(x, "near"), x[0])
  np.testing.assert_array_equal(channels.apply(x, "far"), x[1])
  np.testing.assert_array_equal(channels.apply(x, "mean"), (x[0] + x[1]) / 2)  # exact: one rounding either way
  mono = x[:1]
  for policy in ("near", "mean"):
    np.testing.assert_array_equal(channels.apply(mono, policy), mono[0])


@pytest.mark.parametrize("policy,count", [("far", 1), ("cancel", 1), ("far", 8), ("cancel", 3)])
def test_two_channel_policies_refuse_other_counts(policy, count):
  with pytest.raises(channels.ChannelError,
                     match=rf"{count} channel\(s\), but channel policy '{policy}' needs exactly 2"):
    channels.apply(np.zeros((count, 100), np.float32), policy)


def test_unknown_policy():
  with pytest.raises(channels.ChannelError, match="unknown channel policy 'both'"):
    channels.apply(np.zeros((2, 10)), "both")


@pytest.mark.parametrize("h", [
    np.eye(1, 41, 40)[0] * 0.8,                               # a pure delay of 2.5 ms
    np.eye(1, 161, 160)[0] * 0.8,                             # 10 ms: the longest path difference the window is for
    [1.0, 0.0, 0.5, 0.0, 0.0, -0.3],                          # a short filter
    np.r_[np.zeros(30), 0.9, np.zeros(10), 0.4, np.zeros(20), -0.2],  # delay + two reflections
])
def test_cancel_removes_a_noise_that_reaches_both_channels_through_a_known_filter(h):
  """near = h * far, far white noise. Bound (channels.filter_residual_fraction): one complex gain per STFT bin set to
  the filter's exact response leaves, in expectation, sum_k h_k^2 D(k) / (sum_k h_k^2 W) of the near channel's STFT
  energy (D(k): energy of the Hann window minus its k-shift, W: the window's energy); the least-squares gain leaves
  at most that per bin, and overlap-add at 75 % Hann overlap (a tight frame) does not amplify it. Over 10 s the
  realised STFT energy is a sum over ~40 independent windows x 2049 bins, within a few % of its expectation, so the
  expected fraction is the bound."""
  near, far = _noise_pair(h, 10 * RATE, seed=1)
  y = channels.cancel(near, far).astype(np.float64)
  bound = channels.filter_residual_fraction(h)
  assert np.sum(y**2) <= bound * np.sum(near**2)
  assert bound < 0.03  # the settings are meant for path differences up to ~10 ms


def test_cancel_keeps_a_sound_that_only_the_near_channel_hears():
  """near = s + h * n, far = n. Besides the noise residual (the bound above), the least-squares gain also removes
  the part of s that happens to correlate with n over the clip: per bin about one independent window's share,
  i.e. a fraction nperseg / samples of s's energy in expectation; the test allows that once more."""
  n = 10 * RATE
  h = np.r_[np.zeros(30), 0.9, np.zeros(10), 0.4, np.zeros(20), -0.2]
  noise_near, far = _noise_pair(h, n, seed=2)
  t = np.arange(n) / RATE
  s = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.random.default_rng(3).standard_normal(n)
  y = channels.cancel(s + noise_near, far).astype(np.float64)
  allowed = (channels.filter_residual_fraction(h) * np.sum(noise_near**2)
             + 2 * channels.CANCEL_STFT.nperseg / n * np.sum(s**2))
  assert np.sum((y - s) ** 2) <= allowed
  assert np.sum((y - s) ** 2) < 0.05 * np.sum(s**2)  # and s is kept: the noise was as loud as s + 7 dB


def test_cancel_with_a_silent_far_channel_returns_the_near_channel():
  """H = 0 (the regulariser's absolute floor), so Y = C and istft(stft(x)) = x up to float64 rounding, returned
  as float32: within half a float32 ulp of |x| <= 1 plus the round trip's ~1e-15."""
  near = np.random.default_rng(4).uniform(-1, 1, 3 * RATE)
  y = channels.cancel(near, np.zeros_like(near))
  np.testing.assert_allclose(y, near, rtol=0, atol=np.finfo(np.float32).eps)


def test_delay_residual_matches_its_small_delay_approximation():
  """D(d) / W for the Hann window ~ (4 pi^2 / 3) (d / N)^2 for d << N (second-order Taylor term of the window)."""
  for d in (4, 16, 64):
    exact = channels.delay_residual_fraction(d, 4096)
    assert exact == pytest.approx(4 * np.pi**2 / 3 * (d / 4096) ** 2, rel=0.02)


def test_transfer_function_is_the_least_squares_gain():
  """Against numpy's least squares, bin by bin."""
  rng = np.random.default_rng(5)
  c = rng.standard_normal((7, 50)) + 1j * rng.standard_normal((7, 50))
  f = rng.standard_normal((7, 50)) + 1j * rng.standard_normal((7, 50))
  h = channels.transfer_function(c, f, relative_floor=0.0)
  for k in range(7):
    expected = np.linalg.lstsq(f[k][:, None], c[k], rcond=None)[0][0]
    assert h[k] == pytest.approx(expected, rel=1e-12)


def test_cancel_keeps_the_length_of_any_input():
  for n in (1, 1000, 4096, 16001):
    x = np.random.default_rng(n).standard_normal((2, n))
    assert channels.apply(x, "cancel").shape == (n,)


def test_windows_apply_the_policy_per_window():
  """A two-channel recording cut into windows: each window is the policy applied to that window's samples, the
  same waveform load_wav gives for a file holding just that window."""
  rng = np.random.default_rng(6)
  rec = rng.uniform(-0.5, 0.5, (2, 2 * RATE + RATE // 2)).astype(np.float32)  # 2.5 s: two windows + a kept half
  for policy in channels.POLICIES:
    w = windows.split(rec, RATE, RATE, channels=policy)
    assert w.wavs.shape == (3, RATE)
    for i, start in enumerate((0, RATE, 2 * RATE)):
      piece = rec[:, start:start + RATE]
      if piece.shape[1] < RATE:
        piece = np.tile(piece, 2)[:, :RATE]
      np.testing.assert_array_equal(w.wavs[i], channels.apply(piece, policy))
  with pytest.raises(ValueError, match="needs a channel policy"):
    windows.split(rec, RATE, RATE)
  with pytest.raises(channels.ChannelError, match="needs exactly 2"):
    windows.split(rec[:1], RATE, RATE, channels="cancel")


def test_stft_settings_are_a_tight_frame():
  """Hann (periodic) at 75 % overlap: the shifted squared windows sum to a constant, the premise of the bound."""
  s = channels.CANCEL_STFT
  w = scipy.signal.get_window(s.window, s.nperseg)
  total = np.zeros(4 * s.nperseg)
  for start in range(0, total.size - s.nperseg + 1, s.hop):
    total[start:start + s.nperseg] += w**2
  interior = total[s.nperseg:-s.nperseg]
  np.testing.assert_allclose(interior, interior[0], rtol=1e-12)
