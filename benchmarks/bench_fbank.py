"""Benchmark: the Kaldi fbank front end (JAX, jitted) side by side with librosa's log-mel spectrogram.

Same clips, one process. The JAX rows run the whole batch in one call (BEATs and EAT settings); librosa
has no batched mel spectrogram, so it runs clip by clip (its closest equivalent: 512-point power STFT of
400-sample Hann frames, 128 mels, log). `quick=True` uses 2 clips of 4 s.
"""

from __future__ import annotations

import jax
import librosa
import numpy as np

from asd_jax.audio import fbank as fb
from benchmarks import common

SAMPLE_RATE = 16000


def _librosa_log_mel(wav: np.ndarray) -> np.ndarray:
  return np.stack([np.log(np.maximum(librosa.feature.melspectrogram(
      y=clip, sr=SAMPLE_RATE, n_fft=512, win_length=400, hop_length=160, n_mels=128, center=False,
      power=2.0), 1.1920929e-07)).T for clip in wav])


def run(quick: bool = False) -> str:
  batch, seconds, repeats = (2, 4.0, 2) if quick else (16, 10.0, 5)
  wav = (0.1 * np.random.default_rng(0).standard_normal((batch, int(seconds * SAMPLE_RATE)))).astype(np.float32)
  rows, times = [], {}
  for name, config in (("JAX fbank, BEATs settings (jit)", fb.BEATS_FBANK),
                       ("JAX fbank, EAT settings (jit)", fb.EAT_FBANK)):
    x = jax.device_put(wav)
    _, compile_s, median, spread = common.compile_and_time(lambda w, c=config: fb.fbank(w, c), x, repeats=repeats)
    times[name] = (median, spread, compile_s)
  _librosa_log_mel(wav[:1])  # librosa's first call compiles numba kernels
  times["librosa melspectrogram + log, per clip"] = (*common.time_call(lambda: _librosa_log_mel(wav),
                                                                       repeats=repeats), None)
  librosa_time = times["librosa melspectrogram + log, per clip"][0]
  for name, (median, spread, compile_s) in times.items():
    rows.append([name, batch, median, spread, batch / median, librosa_time / median,
                 "-" if compile_s is None else compile_s])
  header = ["front end", "clips", "median s", "spread s", "clips/s", "speed-up vs librosa", "compile s"]
  return "\n".join([
      "## Front end: Kaldi fbank (JAX) vs librosa", "", common.machine_description(), "",
      f"{batch} clips of {seconds:g} s at 16 kHz, float32; median of {repeats} runs.", "",
      common.markdown_table(header, rows)])


if __name__ == "__main__":
  print(run())
