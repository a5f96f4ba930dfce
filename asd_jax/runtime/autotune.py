"""Batch-size autotuning for embedding extraction: measure a few batch sizes on the devices, keep the fastest.

Throughput (clips/s) of a jitted forward pass grows with the batch until the devices are busy, then flattens;
past the memory limit compilation or execution fails. `pick_batch_size` walks candidate sizes upwards,
stops at the first that fails with out-of-memory or gains less than `min_gain` over the best so far, and
returns the best. The measurement (`forward_throughput`) runs the real compiled forward on zero waveforms, so
it includes the front end and every layer, and not the file decoding.

`speed(count, seconds)` is how every progress bar and log line states a throughput: never `0.0 clips/s`
(EAT-large trains at 0.04 clips/s on a CPU), and a stage that did no work says so.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np
from absl import logging

from asd_jax.runtime import sharding as shd


def is_out_of_memory(error: Exception) -> bool:
  """Whether an XLA error is an allocation failure (the message names RESOURCE_EXHAUSTED / out of memory)."""
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def speed(count: float, seconds: float, unit: str = "clip") -> str:
  """A throughput a person can read: "12 clips/s", "3.4 clips/s", below one per second "24.6 s/clip", and
  "no clips" when `count` is 0 (a stage with nothing to do)."""
  if count <= 0:
    return f"no {unit}s"
  rate = count / max(seconds, 1e-9)
  if rate >= 10:
    return f"{rate:.0f} {unit}s/s"
  if rate >= 1:
    return f"{rate:.1f} {unit}s/s"
  return f"{seconds / count:.1f} s/{unit}"


def candidate_batch_sizes(num_devices: int, max_batch: int = 512) -> list[int]:
  """Powers of two times the device count (so every device gets the same share), up to `max_batch`."""
  sizes, size = [], num_devices
  while size <= max(max_batch, num_devices):
    sizes.append(size)
    size *= 2
  return sizes


def pick_batch_size(measure: Callable[[int], float], candidates: Sequence[int], *,
                    min_gain: float = 0.05) -> tuple[int, list[tuple[int, float | None]]]:
  """`(best batch size, [(size, clips/s or None if out of memory), ...])` over ascending `candidates`.

  `measure(size)` returns clips/s and raises on failure; out-of-memory errors end the search, others
  propagate. Stops once a size improves on the best by less than `min_gain` (relative).
  """
  if not candidates:
    raise ValueError("no candidate batch sizes")
  tried: list[tuple[int, float | None]] = []
  best, best_rate = None, 0.0
  for size in sorted(candidates):
    try:
      rate = measure(size)
    except Exception as error:  # noqa: BLE001  (only allocation failures are expected here)
      if not is_out_of_memory(error):
        raise
      tried.append((size, None))
      break
    tried.append((size, rate))
    if best is not None and rate < best_rate * (1.0 + min_gain):
      if rate > best_rate:
        best, best_rate = size, rate
      break
    best, best_rate = size, rate
  if best is None:
    raise RuntimeError(f"not even batch size {sorted(candidates)[0]} fits in device memory")
  return best, tried


def forward_throughput(forward: Callable, params, samples: int, mesh, *, repeats: int = 3) -> Callable[[int], float]:
  """`measure(size) -> clips/s` of the jitted `forward(params, wav [size, samples])` (compiled first)."""

  def measure(size: int) -> float:
    wav = shd.put_batch({"wav": np.zeros((size, samples), np.float32)}, mesh)["wav"]
    compiled = forward.lower(params, wav).compile()
    jax.block_until_ready(compiled(params, wav))
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(compiled(params, wav))
      times.append(time.perf_counter() - start)
    rate = size / statistics.median(times)
    logging.info("autotune: batch %d -> %s", size, speed(size, statistics.median(times)))
    return rate

  return measure
