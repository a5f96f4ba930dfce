"""Shared benchmark helpers: machine description, repeated timing, peak memory.

Every benchmark module `benchmarks/bench_*.py` exposes `run(quick: bool) -> str`, returning one
markdown section (a heading, a line naming the machine, then a table). `benchmarks.run` calls them
all and rewrites BENCHMARKS.md. Compare side by side in one process (ratios): these machines are
noisy, so absolute figures are only indicative.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any


def machine_description() -> str:
  """One line naming the machine: CPU model and cores, or the accelerator, and key versions."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  parts = [f"{cpu}, {cores} cores"]
  try:
    import jax  # Imported lazily: scoring benchmarks must not need JAX.

    devices = jax.devices()
    if devices[0].platform != "cpu":
      parts = [f"{len(devices)} x {devices[0].device_kind}"] + parts
    parts.append(f"jax {jax.__version__}")
  except ImportError:
    pass
  import numpy as np

  parts.append(f"numpy {np.__version__}")
  return "; ".join(parts)


def time_call(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> tuple[float, float]:
  """Median and spread (max - min) in seconds of `fn()` over `repeats` runs after `warmup` runs.

  `fn` must block until its result is ready (call `jax.block_until_ready` inside it).
  """
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), max(times) - min(times)


def peak_rss_mib() -> float:
  """Peak resident memory of this process so far, MiB (Linux ru_maxrss is KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
  """A GitHub markdown table; floats are printed with 3 significant digits."""

  def cell(value: Any) -> str:
    if isinstance(value, float):
      return f"{value:.3g}"
    return str(value)

  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)
