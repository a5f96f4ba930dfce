"""Cosine kNN scoring: asd_jax.scoring.knn against scikit-learn's brute-force NearestNeighbors.

Both search the same float32 bank for the same queries (k=1, cosine metric). Time is the median
of repeated calls; peak memory is what tracemalloc sees allocated during one call (NumPy arrays
included), beyond the inputs. The ratio column is scikit-learn time / asd_jax time.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
from sklearn.neighbors import NearestNeighbors

from asd_jax.scoring import knn
from benchmarks import common


def _peak_mib(fn) -> float:
  tracemalloc.start()
  try:
    fn()
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  return peak / 2**20


def run(quick: bool = False) -> str:
  n_bank, n_query, dim = (5_000, 1_000, 768) if quick else (50_000, 10_000, 768)
  repeats = 2 if quick else 3
  rng = np.random.default_rng(0)
  bank = rng.normal(size=(n_bank, dim)).astype(np.float32)
  queries = rng.normal(size=(n_query, dim)).astype(np.float32)

  nn = NearestNeighbors(n_neighbors=1, metric="cosine", algorithm="brute").fit(bank)
  methods = {
      "asd_jax cosine_knn (chunked NumPy)": lambda: knn.cosine_knn(queries, bank, 1),
      "asd_jax cosine_knn, pre-normalised bank": None,  # filled below
      "sklearn NearestNeighbors(brute, cosine)": lambda: nn.kneighbors(queries),
  }
  unit_bank = knn.l2_normalize(bank)
  methods["asd_jax cosine_knn, pre-normalised bank"] = lambda: knn.cosine_knn(
      queries, unit_bank, 1, bank_is_normalized=True)

  ours = knn.cosine_knn(queries, bank, 1)
  ref_dist, ref_idx = nn.kneighbors(queries)
  same = float(np.mean(ours.nearest == ref_idx[:, 0]))
  max_diff = float(np.max(np.abs(ours.distances[:, 0] - ref_dist[:, 0])))

  # NumPy and scikit-learn need no compile warm-up; the agreement check above warmed the caches.
  timings = {name: common.time_call(fn, repeats=repeats, warmup=0) for name, fn in methods.items()}
  peaks = {name: _peak_mib(fn) for name, fn in methods.items()}
  sk_time = timings["sklearn NearestNeighbors(brute, cosine)"][0]
  rows = [[name, med, spread, peaks[name], sk_time / med] for name, (med, spread) in timings.items()]
  table = common.markdown_table(
      ["method", "median s", "spread s", "peak extra MiB (tracemalloc)", "speed-up vs sklearn"], rows)
  return "\n".join([
      f"## kNN scoring (bank {n_bank:,} x {dim}, {n_query:,} queries, k=1, float32)",
      "",
      common.machine_description(),
      "",
      table,
      "",
      f"Same nearest index for {100 * same:.2f}% of queries; max |distance difference| {max_diff:.2e}. "
      f"Inputs: bank {bank.nbytes / 2**20:.0f} MiB, queries {queries.nbytes / 2**20:.0f} MiB.",
  ])


if __name__ == "__main__":
  print(run())
