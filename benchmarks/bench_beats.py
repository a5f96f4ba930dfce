"""Benchmark: forward pass of the full-size BEATs encoder (BEATs_iter3+ layout) on 10 s clips.

Random weights (speed does not depend on them), jitted, from the normalised fbank (998 frames, 496 tokens),
at batch 1 and 8, float32 and bfloat16 compute, with the reference attention and with
`jax.nn.dot_product_attention`. Compilation is timed apart. The comparison with upstream PyTorch BEATs on
the same weights is `benchmarks/side_by_side.py`. `quick=True` runs the tiny config on 4 s clips.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from asd_jax.audio import fbank as fb
from asd_jax.models import beats
from benchmarks import common

SAMPLE_RATE = 16000


def run(quick: bool = False) -> str:
  seconds, config, repeats = (4.0, beats.BEATS_TINY, 2) if quick else (10.0, beats.BEATS_ITER3_PLUS, 3)
  batches = (1, 2) if quick else (1, 8)
  # (dtype, fused attention): the CPU default first, then each option alone.
  variants = ((jnp.float32, False), (jnp.bfloat16, False), (jnp.float32, True))
  frames = fb.BEATS_FBANK.num_frames(int(seconds * SAMPLE_RATE))
  params = jax.jit(lambda x: beats.BEATs(config).init(jax.random.key(0), x)["params"])(
      jnp.zeros((1, frames, 128), jnp.float32))
  rows = []
  for batch in batches:
    features = jnp.asarray(np.random.default_rng(1).standard_normal((batch, frames, 128)), jnp.float32)
    compiled, calls = {}, {}
    for dtype, fused in variants:
      model = beats.BEATs(config, dtype=dtype, fused_attention=fused)
      key = (jnp.dtype(dtype).name, "dot_product_attention" if fused else "reference")
      compiled[key] = common.compile_ahead(lambda p, x, m=model: m.apply({"params": p}, x).features, params,
                                           features)
      calls[key] = lambda c=compiled[key][0]: jax.block_until_ready(c(params, features))
    # In turns, so that load changes hit every variant alike; batch 8 (compiled ahead) without a warm-up.
    timed = common.time_interleaved(calls, repeats=repeats, warmup=1 if batch == 1 else 0)
    base = timed[("float32", "reference")][0]
    for key, (median, spread) in timed.items():
      rows.append([batch, *key, median, spread, batch / median, base / median, compiled[key][1]])
  header = ["batch", "compute dtype", "attention", "median s", "spread s", "clips/s", "speed-up vs float32 ref",
            "compile s"]
  return "\n".join([
      f"## BEATs encoder forward ({config.encoder_layers} x {config.encoder_embed_dim}, {seconds:g} s clips)", "",
      common.machine_description(), "",
      f"{frames} fbank frames, {frames // 16 * 8} tokens; random weights; median of {repeats} runs (batch 1 "
      "after a warm-up run), the variants of a batch timed in turns; parameters float32 in every row.", "",
      common.markdown_table(header, rows)])


if __name__ == "__main__":
  print(run())
