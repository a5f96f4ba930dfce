"""Benchmark of training's dataset scan at development-set size, with and without its NaN/inf check (issue 26.4).

Training's scan (`asd_jax.data.layout.scan_dataset(..., finite=True)`) decodes every clip of a float sample
format to refuse NaN or inf samples before any compute; a clip of an integer format (16-bit PCM: every DCASE
release) cannot hold them and is not decoded (`asd_jax.audio.wav.may_hold_non_finite`). This writes ~7,000 10 s
16 kHz clips (the DCASE 2025 dev set's count: 7 machine types x (1000 training + 200 test) + supplementary
clips) into one machine folder, once as PCM-16 and once as 32-bit float, and times the scan without and with the
check on each, in turns. The files were just written, so they are in the page cache: a cold disk adds its read
time to the float rows (4.5 GB).
"""

from __future__ import annotations

import os
import resource
import tempfile
import time

import numpy as np
import soundfile

from asd_jax.data import layout
from benchmarks import common


def _write(root: str, n_clips: int, seconds: float, subtype: str) -> float:
  """Writes `n_clips` clips into `root/fan/train` (the dataset's layout); returns the size in GB."""
  folder = os.path.join(root, "fan", "train")
  os.makedirs(folder)
  clip = np.random.default_rng(0).normal(scale=0.1, size=int(16000 * seconds)).astype(np.float32)
  for i in range(n_clips):
    soundfile.write(os.path.join(folder, f"section_00_source_train_normal_{i:04d}_a_1.wav"), np.roll(clip, i),
                    16000, subtype=subtype)
  return sum(e.stat().st_size for e in os.scandir(folder)) / 1e9


def _cpu_s() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def run(quick: bool = False) -> str:
  n_clips, seconds = (100, 1.0) if quick else (7000, 10.0)
  rows, sizes = [], {}
  for subtype in ("PCM_16", "FLOAT"):
    with tempfile.TemporaryDirectory() as root:
      t0 = time.perf_counter()
      sizes[subtype] = (_write(root, n_clips, seconds, subtype), time.perf_counter() - t0)
      cpu = {}

      def scan(finite: bool, root: str = root) -> None:
        c0 = _cpu_s()
        assert len(layout.scan_dataset(root, require_train=True, finite=finite)) == n_clips
        cpu.setdefault(finite, []).append(_cpu_s() - c0)

      timed = common.time_interleaved({"headers only": lambda: scan(False), "NaN/inf check": lambda: scan(True)},
                                      repeats=3, warmup=1)
      for name, finite in (("headers only", False), ("NaN/inf check", True)):
        median, spread = timed[name]
        rows.append([subtype, name, median, spread, float(np.median(cpu[finite][1:]))])
  written = ", ".join(f"{k}: {gb:.2f} GB written in {s:.0f} s" for k, (gb, s) in sizes.items())
  return "\n".join([
      "## Dataset scan with the NaN/inf check (training's scan)", "",
      common.machine_description(), "",
      f"{n_clips} wav files of {seconds:g} s at 16 kHz in one machine folder ({written}; hence in the page cache); "
      "wall seconds (median of 3 after a warm-up, spread = max - min) and CPU seconds of the process (median).", "",
      common.markdown_table(["sample format", "scan", "median s", "spread s", "CPU s"], rows),
  ])


if __name__ == "__main__":
  print(run())
