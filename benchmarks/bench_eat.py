"""Forward throughput of the EAT encoder (base and large) on 10 s clips, float32, under jit.

A 10 s clip is 1024 fbank frames after EAT's padding: 64 x 8 = 512 patch tokens plus CLS. Parameters are
random (the speed does not depend on their values). `quick=True` runs narrow, shallow models on 2.56 s
clips, only to check that the benchmark works.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from asd_jax.models import eat
from benchmarks.common import machine_description, markdown_table, time_call


def _measure(name: str, config: eat.EATConfig, frames: int, batch: int, repeats: int) -> list:
  model = eat.EAT(config)
  fbank = jnp.asarray(np.random.default_rng(0).normal(size=(batch, frames, 128)).astype(np.float32))
  params = jax.jit(model.init)(jax.random.key(0), fbank)["params"]
  forward = jax.jit(lambda p, x: model.apply({"params": p}, x).features)
  start = time.perf_counter()
  jax.block_until_ready(forward(params, fbank))
  compile_s = time.perf_counter() - start
  median, spread = time_call(lambda: jax.block_until_ready(forward(params, fbank)), repeats=repeats, warmup=0)
  tokens = 1 + frames // config.patch_size * config.freq_patches
  return [name, f"{config.depth} x {config.embed_dim}", tokens, batch, median * 1e3, spread * 1e3,
          batch / median, compile_s]


def run(quick: bool = False) -> str:
  """One markdown section with clips/s of EAT-base and EAT-large at batch 1 and 8."""
  if quick:
    models = [("EAT-tiny", eat.EAT_TINY), ("EAT-base (1 block)", dataclasses.replace(eat.EAT_BASE, depth=1))]
    frames, batches, repeats = 256, (1, 2), 2
  else:
    models = [("EAT-base", eat.EAT_BASE), ("EAT-large", eat.EAT_LARGE)]
    frames, batches, repeats = eat.EAT_BASE.target_length, (1, 8), 2
  rows = [_measure(name, config, frames, batch, repeats) for name, config in models for batch in batches]
  header = ["model", "depth x dim", "tokens", "batch", "ms / batch (median)", "spread ms", "clips / s",
            "compile s"]
  clip_s = frames / 100.0
  return "\n".join([
      "## EAT encoder forward (float32, jit)",
      "",
      machine_description(),
      "",
      f"Clips of {clip_s:g} s ({frames} fbank frames); median over {repeats} runs after compilation.",
      "",
      markdown_table(header, rows),
  ])


if __name__ == "__main__":
  print(run())
