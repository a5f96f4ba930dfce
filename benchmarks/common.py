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
  except ImportError:
    pass
  parts.append(versions())
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


def time_interleaved(fns: dict[str, Callable[[], Any]], *, repeats: int = 3,
                     warmup: int = 1) -> dict[str, tuple[float, float]]:
  """Median and spread (s) of each blocking callable in `fns`, timed in turns (a, b, c, a, b, c, ...) after
  `warmup` untimed rounds, so that changing load on a shared machine hits every variant alike."""
  for _ in range(warmup):
    for fn in fns.values():
      fn()
  times: dict[str, list[float]] = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return {name: (statistics.median(t), max(t) - min(t)) for name, t in times.items()}


def compile_ahead(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
  """`(compiled, seconds)`: `jax.jit(fn)` lowered and compiled for `args`, so compilation is timed alone."""
  import jax

  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, time.perf_counter() - start


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


def compile_and_time(fn: Callable[..., Any], *args: Any, repeats: int = 3,
                     warmup: int = 1) -> tuple[Any, float, float, float]:
  """`(compiled, compile s, median s, spread s)` of `jax.jit(fn)(*args)`, compiled ahead of time so the
  compilation is measured on its own; then `warmup` untimed runs and `repeats` timed ones."""
  import jax

  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - start
  median, spread = time_call(lambda: jax.block_until_ready(compiled(*args)), repeats=repeats, warmup=warmup)
  return compiled, compile_s, median, spread


def xla_memory_bytes(compiled: Any) -> int | None:
  """XLA's memory estimate of a compiled computation: arguments + outputs + temporaries - donated (aliased)
  buffers, bytes; None where the backend gives no analysis."""
  mem = compiled.memory_analysis()
  if mem is None:
    return None
  return (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
          - mem.alias_size_in_bytes)


def device_peak_bytes() -> int | None:
  """Peak bytes in use on the first device since start (GPU/TPU allocator statistics); None on CPU."""
  import jax

  stats = jax.devices()[0].memory_stats()
  return None if not stats else stats.get("peak_bytes_in_use")


def versions() -> str:
  """Versions of the libraries that are installed, among jax, jaxlib, flax, optax, numpy, torch, scikit-learn."""
  import importlib.metadata as md

  names = ["jax", "jaxlib", "flax", "optax", "numpy", "torch", "scikit-learn"]
  found = []
  for name in names:
    try:
      found.append(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
      pass
  return ", ".join(found)
