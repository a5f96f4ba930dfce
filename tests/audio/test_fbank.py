"""Kaldi fbank: parity with torchaudio's fixtures, a float64 NumPy reference, and shape rules."""

import dataclasses

import jax
import numpy as np
import pytest

from asd_jax.audio import fbank as fb


def _numpy_kaldi_fbank(clip: np.ndarray, config: fb.FbankConfig) -> np.ndarray:
  """Float64 per-frame reference written independently of the module (loops, full FFT, np.interp)."""
  clip = clip.astype(np.float64)
  if config.subtract_waveform_mean:
    clip = clip - clip.mean()
  clip = clip * config.waveform_scale
  length, shift, nfft = 400, 160, 512
  n = np.arange(length)
  window = 0.5 - 0.5 * np.cos(2 * np.pi * n / (length - 1))
  if config.window == "povey":
    window = window**0.85
  mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)
  edges = np.linspace(mel(20.0), mel(8000.0), config.num_mel_bins + 2)
  bin_mels = mel(np.arange(nfft // 2) * 16000.0 / nfft)
  filters = np.stack([np.interp(bin_mels, edges[m:m + 3], [0.0, 1.0, 0.0], left=0.0, right=0.0)
                      for m in range(config.num_mel_bins)])  # [mel, 256]
  rows = []
  for start in range(0, len(clip) - length + 1, shift):
    frame = clip[start:start + length].copy()
    frame -= frame.mean()
    frame = frame - 0.97 * np.concatenate([[frame[0]], frame[:-1]])
    spectrum = np.fft.fft(frame * window, nfft)[:nfft // 2]
    energies = filters @ (np.abs(spectrum)**2)
    rows.append(np.log(np.maximum(energies, np.finfo(np.float32).eps)))
  out = np.stack(rows)
  if config.target_length is not None:
    out = out[:config.target_length]
    out = np.pad(out, ((0, config.target_length - len(out)), (0, 0)))
  return (out - config.norm_mean) / (2 * config.norm_std)


def test_beats_fbank_matches_torchaudio_fixture(fixtures):
  data = np.load(fixtures / "beats_tiny_io.npz")
  out = np.asarray(fb.fbank(data["wav"], fb.BEATS_FBANK))
  assert out.shape == data["fbank"].shape == (2, 398, 128)
  np.testing.assert_allclose(out, data["fbank"], rtol=0, atol=1e-4)


def test_eat_fbank_matches_torchaudio_fixture(fixtures):
  data = np.load(fixtures / "eat_tiny_io.npz")
  config = dataclasses.replace(fb.EAT_FBANK, target_length=400)
  out = np.asarray(fb.fbank(data["wav"], config))
  assert out.shape == data["fbank"].shape == (2, 400, 128)
  np.testing.assert_allclose(out, data["fbank"], rtol=0, atol=1e-4)
  # Padding happens in the log-mel domain, so pad frames hold the normalised zero.
  np.testing.assert_allclose(out[:, 398:], (0 + 4.268) / (2 * 4.569), atol=1e-6)


@pytest.mark.parametrize("config", [fb.BEATS_FBANK, dataclasses.replace(fb.EAT_FBANK, target_length=120)],
                         ids=["beats", "eat_crop"])
def test_matches_float64_numpy_reference(config):
  rng = np.random.default_rng(0)
  t = np.arange(24000) / 16000.0
  wav = np.stack([0.2 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(t.size) + 0.02,
                  0.1 * rng.standard_normal(t.size)]).astype(np.float32)
  out = np.asarray(fb.fbank(wav, config))
  expected = np.stack([_numpy_kaldi_fbank(c, config) for c in wav])
  assert out.shape == expected.shape
  np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4)


def test_empty_mel_bin_is_log_eps():
  wav = np.random.default_rng(1).standard_normal((1, 4000)).astype(np.float32) * 0.1
  out = np.asarray(fb.fbank(wav, fb.BEATS_FBANK))
  expected = (np.log(np.finfo(np.float32).eps) - 15.41663) / (2 * 6.55582)
  np.testing.assert_allclose(out[..., 3], expected, atol=1e-5)
  filters = fb.mel_filterbank(16000, 512, 128)
  assert filters.shape == (257, 128) and not filters[:, 3].any() and not filters[-1].any()


def test_frame_count_follows_snip_edges():
  assert fb.BEATS_FBANK.num_frames(64000) == 398
  assert fb.BEATS_FBANK.num_frames(160000) == 998
  assert fb.BEATS_FBANK.num_frames(399) == 0
  assert fb.fbank(np.zeros((3, 560), np.float32)).shape == (3, 2, 128)
  with pytest.raises(ValueError, match="at least 400 samples"):
    fb.fbank(np.zeros((1, 399), np.float32))


def test_batch_invariance_and_jit(fixtures):
  wav = np.load(fixtures / "beats_tiny_io.npz")["wav"]
  both = np.asarray(fb.fbank(wav))
  single = np.asarray(fb.fbank(wav[1:]))
  np.testing.assert_allclose(single[0], both[1], atol=1e-6)
  with jax.disable_jit():
    eager = np.asarray(fb.fbank(wav[:1]))
  np.testing.assert_allclose(eager, both[:1], atol=1e-5)


def test_unknown_window_is_refused():
  with pytest.raises(ValueError, match="unknown fbank window"):
    fb.fbank(np.zeros((1, 800), np.float32), dataclasses.replace(fb.BEATS_FBANK, window="hamming"))
