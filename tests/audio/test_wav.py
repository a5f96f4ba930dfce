"""wav loading: mono mix-down, resampling against an analytic sine, padding, error paths."""

import numpy as np
import pytest
import soundfile

from asd_jax.audio import wav as wavlib


def _write(path, data, rate, subtype="FLOAT"):
  soundfile.write(str(path), data, rate, subtype=subtype)
  return path


def test_reads_mono_float32_exactly(tmp_path):
  x = np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32)
  out = wavlib.load_wav(_write(tmp_path / "a.wav", x, 16000), duration_s=1.0)
  assert out.dtype == np.float32 and out.shape == (16000,)
  np.testing.assert_array_equal(out, x)


def test_stereo_channels_follow_the_policy(tmp_path):
  """near/far select a channel exactly; mean averages (one float32 rounding of (a + b) / 2); near is the default."""
  rng = np.random.default_rng(1)
  x = rng.uniform(-0.5, 0.5, (8000, 2)).astype(np.float32)
  path = _write(tmp_path / "s.wav", x, 16000)
  np.testing.assert_array_equal(wavlib.load_wav(path, duration_s=None), x[:, 0])
  np.testing.assert_array_equal(wavlib.load_wav(path, duration_s=None, channels="near"), x[:, 0])
  np.testing.assert_array_equal(wavlib.load_wav(path, duration_s=None, channels="far"), x[:, 1])
  np.testing.assert_array_equal(wavlib.load_wav(path, duration_s=None, channels="mean"), (x[:, 0] + x[:, 1]) / 2)


def test_eight_channel_file_near_and_mean(tmp_path):
  """MIMII-like array: near is channel 0, mean the average. Float32 mean of 8 values |x| <= 0.5: 7 additions of
  partial sums <= 4 (each rounding <= 2 eps) then / 8, so < 2 eps off the exact mean; the bound is 4 eps."""
  x = np.random.default_rng(2).uniform(-0.5, 0.5, (4000, 8)).astype(np.float32)
  path = _write(tmp_path / "array.wav", x, 16000)
  np.testing.assert_array_equal(wavlib.load_wav(path, duration_s=None), x[:, 0])
  np.testing.assert_allclose(wavlib.load_wav(path, duration_s=None, channels="mean"),
                             x.astype(np.float64).mean(axis=1), atol=8 * np.finfo(np.float32).eps * 0.5)
  for policy in ("far", "cancel"):
    with pytest.raises(wavlib.WavError, match=rf"array\.wav: 8 channel\(s\), but channel policy '{policy}' needs"):
      wavlib.load_wav(path, duration_s=None, channels=policy)


@pytest.mark.parametrize("policy", ["far", "cancel"])
def test_mono_file_with_a_two_channel_policy_is_an_error_naming_it(tmp_path, policy):
  path = _write(tmp_path / "mono_clip.wav", np.zeros(1600, np.float32) + 0.1, 16000)
  with pytest.raises(wavlib.WavError, match=rf"mono_clip\.wav: 1 channel\(s\), but channel policy '{policy}'"):
    wavlib.load_wav(path, duration_s=0.1, channels=policy)
  with pytest.raises(wavlib.WavError, match=r"mono_clip\.wav"):
    wavlib.read_channels(path, channels=policy)


@pytest.mark.parametrize("policy", ["near", "mean"])
def test_mono_file_with_near_or_mean_is_the_mono_signal(tmp_path, policy):
  x = np.random.default_rng(3).uniform(-0.5, 0.5, 1600).astype(np.float32)
  path = _write(tmp_path / "m.wav", x, 16000)
  np.testing.assert_array_equal(wavlib.load_wav(path, duration_s=None, channels=policy), x)


def test_unknown_policy_is_an_error_naming_the_file(tmp_path):
  path = _write(tmp_path / "u.wav", np.zeros((100, 2), np.float32), 16000)
  with pytest.raises(wavlib.WavError, match=r"u\.wav: unknown channel policy 'left'"):
    wavlib.load_wav(path, duration_s=None, channels="left")


def test_cancel_runs_on_the_samples_read(tmp_path):
  """cancel estimates its filter on the resampled, cut clip: load_wav of a long file = cancel of its first clip."""
  rng = np.random.default_rng(4)
  x = rng.uniform(-0.3, 0.3, (24000, 2)).astype(np.float32)
  path = _write(tmp_path / "long.wav", x, 16000)
  from asd_jax.audio import channels  # pylint: disable=import-outside-toplevel
  np.testing.assert_array_equal(wavlib.load_wav(path, duration_s=1.0, channels="cancel"),
                                channels.cancel(x[:16000, 0], x[:16000, 1]))
  short = _write(tmp_path / "short.wav", x[:12000], 16000)  # padded by repetition first, then cancelled
  np.testing.assert_array_equal(wavlib.load_wav(short, duration_s=1.0, channels="cancel"),
                                channels.cancel(np.tile(x[:12000, 0], 2)[:16000], np.tile(x[:12000, 1], 2)[:16000]))


@pytest.mark.parametrize("rate", [44100, 48000, 22050, 8000])
def test_resampled_sine_matches_analytic_sine(tmp_path, rate):
  f0 = 1000.0
  t = np.arange(rate) / rate
  path = _write(tmp_path / "sine.wav", 0.5 * np.sin(2 * np.pi * f0 * t), rate)
  out = wavlib.load_wav(path, duration_s=1.0, strict=False)
  expected = 0.5 * np.sin(2 * np.pi * f0 * np.arange(16000) / 16000)
  # Away from the filter's edge transients the resampled sine is the analytic one.
  np.testing.assert_allclose(out[500:-500], expected[500:-500], atol=2e-3)
  spectrum = np.abs(np.fft.rfft(out * np.hanning(out.size)))
  assert np.argmax(spectrum) * 16000 / out.size == pytest.approx(f0, abs=1.0)


def test_wrong_rate_strict_raises(tmp_path):
  path = _write(tmp_path / "r.wav", np.zeros(4410), 44100)
  with pytest.raises(wavlib.WavError, match=r"r\.wav: sample rate 44100 Hz, expected 16000"):
    wavlib.load_wav(path, strict=True)


def test_pad_and_truncate(tmp_path):
  x = np.arange(1, 6, dtype=np.float32) / 10
  path = _write(tmp_path / "short.wav", x, 16000)
  rep = wavlib.load_wav(path, duration_s=12 / 16000, pad="repeat")
  np.testing.assert_allclose(rep, [.1, .2, .3, .4, .5, .1, .2, .3, .4, .5, .1, .2], atol=1e-7)
  zero = wavlib.load_wav(path, duration_s=7 / 16000, pad="zero")
  np.testing.assert_allclose(zero, [.1, .2, .3, .4, .5, 0, 0], atol=1e-7)
  cut = wavlib.load_wav(path, duration_s=3 / 16000)
  np.testing.assert_allclose(cut, [.1, .2, .3], atol=1e-7)
  with pytest.raises(ValueError, match="pad must be"):
    wavlib.fix_length(x, 10, pad="reflect")


def test_int16_file(tmp_path):
  x = np.array([0, 16384, -16384, 32767], dtype=np.int16)
  out = wavlib.load_wav(_write(tmp_path / "i.wav", x, 16000, "PCM_16"), duration_s=None)
  np.testing.assert_allclose(out, x / 32768.0, atol=1e-7)


def test_corrupt_empty_and_missing_files(tmp_path):
  bad = tmp_path / "corrupt.wav"
  bad.write_bytes(b"RIFF\x00\x00not really a wav file")
  with pytest.raises(wavlib.WavError, match="corrupt.wav: cannot read"):
    wavlib.load_wav(bad)
  empty = _write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
  with pytest.raises(wavlib.WavError, match="empty.wav: empty audio"):
    wavlib.load_wav(empty)
  with pytest.raises(wavlib.WavError, match="missing.wav"):
    wavlib.load_wav(tmp_path / "missing.wav")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused_naming_the_file(tmp_path, bad):
  x = np.zeros((16000, 2), np.float32)
  x[8000, 1] = bad  # one damaged sample, in the second channel, at 0.5 s
  path = _write(tmp_path / "damaged.wav", x, 16000)
  with pytest.raises(wavlib.WavError, match=r"damaged\.wav: 1 non-finite sample value\(s\) .* at 0\.500 s"):
    wavlib.load_wav(path, duration_s=1.0)


def test_short_clips_warn_and_too_short_clips_are_errors(tmp_path, caplog):
  rng = np.random.default_rng(2)
  # 0.4 s of a 1 s clip: padded, with a warning naming the file (less than half of the clip is recording).
  short = _write(tmp_path / "short_0.4s.wav", rng.uniform(-0.5, 0.5, 6400).astype(np.float32), 16000)
  with caplog.at_level("WARNING"):
    out = wavlib.load_wav(short, duration_s=1.0)
  assert out.shape == (16000,)
  assert any("short_0.4s.wav: 0.4 s long, less than half the 1 s clip length" in r.getMessage()
             for r in caplog.records)
  # 0.05 s and 1 sample of a 1 s clip: below a tenth of it, refused (a 1-sample clip would become a constant).
  for name, samples in (("cut_0.05s.wav", 800), ("one_sample.wav", 1)):
    path = _write(tmp_path / name, rng.uniform(-0.5, 0.5, samples).astype(np.float32), 16000)
    with pytest.raises(wavlib.WavError, match=rf"{name}: .* s long, less than 0.1 of the 1 s clip length"):
      wavlib.load_wav(path, duration_s=1.0)
  # Exactly at the limits: a tenth is padded (with a warning), half is not short.
  assert wavlib.check_duration("x.wav", 0.1, 1.0) is not None
  assert wavlib.check_duration("x.wav", 0.5, 1.0) is None
  # Without a clip length (duration_s=None) any length is read as it is.
  assert wavlib.load_wav(tmp_path / "one_sample.wav", duration_s=None).shape == (1,)


def test_duration_s_reads_the_header_and_names_a_bad_file(tmp_path):
  path = tmp_path / "clip.wav"
  soundfile.write(path, np.zeros((16_000 * 3 + 8_000, 2), np.float32), 16_000, subtype="PCM_16")
  assert wavlib.duration_s(path) == 3.5  # 56,000 frames at 16 kHz, whatever the channel count
  (tmp_path / "bad.wav").write_bytes(b"not audio")
  with pytest.raises(wavlib.WavError, match="bad.wav: cannot read as audio"):
    wavlib.duration_s(tmp_path / "bad.wav")
