"""Benchmark of the pipeline's training-clip digest at development-set size: first run vs a re-run.

The pipeline hashes every clip's bytes (SHA-256) so that a replaced recording is never mistaken for the old one,
and caches each hash with the file's stat signature (`asd_jax.data.digest`), so a re-run on an unchanged dataset
only stats the files. This writes ~7,000 10 s 16 kHz PCM-16 wav files (the real DCASE 2025 dev set: 7 machine
types x (1000 training + 200 test) + supplementary clips, 2.2 GB) into a temporary folder and times the digest
with an empty cache (hash every file; the files were just written, so they are in the page cache: a cold disk
adds its read time), with a warm cache (nothing changed), and after one file changed. The content of the clips
does not matter for the cost.
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import soundfile

from asd_jax.data import digest
from asd_jax.data.records import ClipRecord
from benchmarks import common


def run(quick: bool = False) -> str:
  n_clips, seconds = (200, 1.0) if quick else (7000, 10.0)
  rng = np.random.default_rng(0)
  rows = []
  with tempfile.TemporaryDirectory() as root:
    t0 = time.perf_counter()
    records = []
    clip = (rng.normal(size=int(16000 * seconds)) * 3000).astype(np.int16)
    for i in range(n_clips):
      path = os.path.join(root, f"section_00_source_train_normal_{i:04d}.wav")
      soundfile.write(path, np.roll(clip, i), 16000, subtype="PCM_16")
      records.append(ClipRecord(path, "fan", "00", "train", "source", "normal"))
    write_s = time.perf_counter() - t0
    size_gb = sum(os.path.getsize(r.path) for r in records) / 1e9
    cache = os.path.join(root, "clip_hashes.json")
    t, _ = common.time_call(lambda: digest.digests({"clips": records}, root, cache), repeats=1, warmup=0)
    rows.append(["empty cache: hash every clip", t, 0.0])
    t, s = common.time_call(lambda: digest.digests({"clips": records}, root, cache), repeats=3, warmup=0)
    rows.append(["warm cache, nothing changed: stat every clip", t, s])

    def one_changed():
      with open(records[0].path, "r+b") as f:
        f.seek(100)
        f.write(os.urandom(8))
      return digest.digests({"clips": records}, root, cache)

    t, s = common.time_call(one_changed, repeats=3, warmup=0)
    rows.append(["warm cache, one clip rewritten", t, s])
  return "\n".join([
      "## Training-clip digest (content hashes with a stat-signature cache)", "",
      common.machine_description(), "",
      f"{n_clips} wav files of {seconds:g} s ({size_gb:.2f} GB, written in {write_s:.0f} s, hence in the page "
      "cache); seconds (median, spread = max - min).", "",
      common.markdown_table(["digest of every clip", "median s", "spread s"], rows),
  ])


if __name__ == "__main__":
  print(run())
