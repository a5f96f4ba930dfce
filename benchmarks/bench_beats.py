"""Benchmark: Kaldi fbank (vs librosa's mel spectrogram) and the full-size BEATs encoder forward pass.

The encoder is the released BEATs_iter3+ layout with random weights (the speed doesn't depend on them),
float32, jitted, on 10 s clips (998 frames, 496 tokens) at batch 1 and 8, with the reference attention and
with `jax.nn.dot_product_attention`. Reference point: upstream PyTorch BEATs ran 0.81 clips/s (batch 1) and
0.33 clips/s (batch 8) on this kind of 2-core machine. `quick=True` uses the tiny config and 4 s clips.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import librosa
import numpy as np

from asd_jax.audio import fbank as fb
from asd_jax.models import beats
from benchmarks import common

SAMPLE_RATE = 16000


def _wav(batch: int, seconds: float) -> np.ndarray:
  rng = np.random.default_rng(0)
  return (0.1 * rng.standard_normal((batch, int(seconds * SAMPLE_RATE)))).astype(np.float32)


def _librosa_log_mel(wav: np.ndarray) -> np.ndarray:
  """Closest librosa equivalent, one clip at a time: 512-point power STFT, 400-sample Hann, 128 mels."""
  return np.stack([np.log(np.maximum(librosa.feature.melspectrogram(
      y=clip, sr=SAMPLE_RATE, n_fft=512, win_length=400, hop_length=160, n_mels=128, center=False,
      power=2.0), 1.1920929e-07)).T for clip in wav])


def run(quick: bool = False) -> str:
  seconds = 4.0 if quick else 10.0
  config = beats.BEATS_TINY if quick else beats.BEATS_ITER3_PLUS
  batches = (1, 2) if quick else (1, 8)
  repeats = 2 if quick else 3
  rows = []

  fbank_batch = 2 if quick else 8
  wav = _wav(fbank_batch, seconds)
  jax_fbank = jax.jit(lambda w: fb.fbank(w, fb.BEATS_FBANK))
  t_jax, s_jax = common.time_call(lambda: jax.block_until_ready(jax_fbank(wav)), repeats=repeats)
  t_lib, s_lib = common.time_call(lambda: _librosa_log_mel(wav), repeats=repeats)
  rows.append(["fbank (JAX, Kaldi)", fbank_batch, "", t_jax, s_jax, fbank_batch / t_jax, t_lib / t_jax])
  rows.append(["librosa melspectrogram + log", fbank_batch, "", t_lib, s_lib, fbank_batch / t_lib, 1.0])

  frames = fb.BEATS_FBANK.num_frames(int(seconds * SAMPLE_RATE))
  params = jax.jit(lambda x: beats.BEATs(config).init(jax.random.key(0), x)["params"])(
      jnp.zeros((1, frames, 128), jnp.float32))
  for batch in batches:
    features = jnp.asarray(np.random.default_rng(1).standard_normal((batch, frames, 128)), jnp.float32)
    reference_time = None
    for fused in (False, True):
      model = beats.BEATs(config, fused_attention=fused)
      forward = jax.jit(lambda p, x, model=model: model.apply({"params": p}, x).features)
      median, spread = common.time_call(lambda: jax.block_until_ready(forward(params, features)),
                                        repeats=repeats)
      reference_time = reference_time or median
      rows.append([f"BEATs forward, {config.encoder_layers}x{config.encoder_embed_dim}", batch,
                   "dot_product_attention" if fused else "reference", median, spread, batch / median,
                   reference_time / median])

  header = ["what", "batch", "attention", "median s", "spread s", "clips/s", "speed-up vs row ref"]
  return "\n".join([
      "## BEATs: fbank and encoder forward (CPU, float32)", "", common.machine_description(), "",
      f"{seconds:g} s clips ({frames} frames); fbank speed-up is vs librosa, encoder speed-up vs the "
      "reference attention at the same batch. Upstream PyTorch BEATs: 0.81 clips/s (batch 1), "
      "0.33 clips/s (batch 8) on a comparable machine.", "",
      common.markdown_table(header, rows)])


if __name__ == "__main__":
  print(run())
