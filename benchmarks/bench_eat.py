"""Benchmark: forward pass of the EAT encoder (base and large) on 10 s clips, float32 and bfloat16, jitted.

A 10 s clip is 1024 fbank frames after EAT's padding: 64 x 8 = 512 patch tokens plus CLS. Random weights
(speed does not depend on them); parameters stay float32, the compute dtype changes. Compilation is timed
apart. To keep `make bench` within its 15 minutes on 2 cores, EAT-large at batch 8 is timed twice and every
other row three times, float32 and bfloat16 in turns; batch 1 after a warm-up run (batch 8 is compiled ahead
and needs none).
`quick=True` runs narrow, shallow models on 2.56 s clips, only to check that the benchmark works.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from asd_jax.models import eat
from benchmarks import common


def _measure(name: str, config: eat.EATConfig, frames: int, batch: int, repeats: int, warmup: int) -> list:
  """Rows for float32 and bfloat16 compute, the two timed in turns."""
  fbank = jnp.asarray(np.random.default_rng(0).normal(size=(batch, frames, 128)).astype(np.float32))
  params = jax.jit(eat.EAT(config).init)(jax.random.key(0), fbank[:1])["params"]
  compiled, calls = {}, {}
  for dtype in (jnp.float32, jnp.bfloat16):
    model = eat.EAT(config, dtype=dtype)
    key = jnp.dtype(dtype).name
    compiled[key] = common.compile_ahead(lambda p, x, m=model: m.apply({"params": p}, x).features, params, fbank)
    calls[key] = lambda c=compiled[key][0]: jax.block_until_ready(c(params, fbank))
  timed = common.time_interleaved(calls, repeats=repeats, warmup=warmup)
  tokens = 1 + frames // config.patch_size * config.freq_patches
  return [[name, f"{config.depth} x {config.embed_dim}", tokens, batch, key, median, spread, batch / median,
           compiled[key][1], repeats] for key, (median, spread) in timed.items()]


def run(quick: bool = False) -> str:
  """One markdown section with clips/s of EAT-base and EAT-large at batch 1 and 8, float32 and bfloat16."""
  if quick:
    models = [("EAT-tiny", eat.EAT_TINY), ("EAT-base (1 block)", dataclasses.replace(eat.EAT_BASE, depth=1))]
    frames, batches = 256, (1, 2)
  else:
    models = [("EAT-base", eat.EAT_BASE), ("EAT-large", eat.EAT_LARGE)]
    frames, batches = eat.EAT_BASE.target_length, (1, 8)
  rows = []
  for name, config in models:
    for batch in batches:
      # Batch 8 is compiled ahead, so it needs no warm-up run (it would cost as much as a timed one).
      big = not quick and config.depth > 12 and batch > 1
      repeats = 2 if big or quick else 3
      warmup = 0 if batch > 1 else 1
      rows += _measure(name, config, frames, batch, repeats, warmup)
  header = ["model", "depth x dim", "tokens", "batch", "compute dtype", "median s", "spread s", "clips/s",
            "compile s", "runs"]
  return "\n".join([
      f"## EAT encoder forward ({frames / 100.0:g} s clips, jit)", "",
      common.machine_description(), "",
      f"{frames} fbank frames per clip; reference attention; parameters float32 in every row.", "",
      common.markdown_table(header, rows)])


if __name__ == "__main__":
  print(run())
