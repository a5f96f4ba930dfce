"""cosine_knn against scikit-learn's brute-force cosine NearestNeighbors and a dense reference."""

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from asd_jax.scoring import knn


def _data(n_bank=53, n_query=29, dim=12, seed=0, dtype=np.float64):
  rng = np.random.default_rng(seed)
  # Different row scales: cosine must not depend on them.
  bank = rng.normal(size=(n_bank, dim)) * rng.uniform(0.1, 10, size=(n_bank, 1))
  queries = rng.normal(size=(n_query, dim)) * rng.uniform(0.1, 10, size=(n_query, 1))
  return bank.astype(dtype), queries.astype(dtype)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("chunks", [(1024, 16384), (7, 5), (1, 53)])
def test_matches_sklearn_cosine_nearest_neighbors(k, chunks):
  bank, queries = _data()
  ref = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(bank)
  ref_dist, ref_idx = ref.kneighbors(queries)
  got = knn.cosine_knn(queries, bank, k, query_chunk=chunks[0], bank_chunk=chunks[1])
  np.testing.assert_array_equal(got.indices, ref_idx)
  np.testing.assert_allclose(got.distances, ref_dist, atol=1e-12)
  np.testing.assert_allclose(got.score, ref_dist.mean(axis=1), atol=1e-12)
  np.testing.assert_array_equal(got.nearest, ref_idx[:, 0])


def test_float32_close_to_float64_reference():
  bank, queries = _data(dtype=np.float32)
  ref_dist, ref_idx = NearestNeighbors(n_neighbors=2, metric="cosine", algorithm="brute").fit(
      bank.astype(np.float64)).kneighbors(queries.astype(np.float64))
  got = knn.cosine_knn(queries, bank, 2, query_chunk=8, bank_chunk=16)
  assert got.distances.dtype == np.float32
  np.testing.assert_allclose(got.distances, ref_dist, atol=1e-5)
  np.testing.assert_array_equal(got.indices, ref_idx)


def test_prenormalized_bank_gives_same_result():
  bank, queries = _data()
  unit = bank / np.linalg.norm(bank, axis=1, keepdims=True)
  a = knn.cosine_knn(queries, bank, 2)
  b = knn.cosine_knn(queries, unit, 2, bank_is_normalized=True)
  np.testing.assert_allclose(a.distances, b.distances, atol=1e-12)
  np.testing.assert_array_equal(a.indices, b.indices)


def test_exclude_gives_leave_one_out_distances():
  bank, _ = _data(n_bank=40)
  unit = bank / np.linalg.norm(bank, axis=1, keepdims=True)
  dist = 1.0 - unit @ unit.T  # dense reference
  np.fill_diagonal(dist, np.inf)
  expected_idx = np.argsort(dist, axis=1)[:, :2]
  exclude = np.arange(40)
  exclude[5] = -1  # no exclusion for query 5: it finds itself at distance 0
  got = knn.cosine_knn(bank, bank, 2, exclude=exclude, query_chunk=6, bank_chunk=9)
  rows = np.arange(40) != 5
  np.testing.assert_array_equal(got.indices[rows], expected_idx[rows])
  np.testing.assert_allclose(got.distances[rows], np.take_along_axis(dist, expected_idx, 1)[rows], atol=1e-12)
  assert got.indices[5, 0] == 5 and got.distances[5, 0] == pytest.approx(0.0, abs=1e-12)


def test_bad_arguments_raise_clear_errors():
  bank, queries = _data()
  with pytest.raises(ValueError, match="k=54 must be in"):
    knn.cosine_knn(queries, bank, 54)
  with pytest.raises(ValueError, match="query dim 3 != bank dim 12"):
    knn.cosine_knn(queries[:, :3], bank, 1)
  with pytest.raises(ValueError, match="2-D"):
    knn.cosine_knn(queries[0], bank, 1)
  with pytest.raises(ValueError, match="exclude must have shape"):
    knn.cosine_knn(queries, bank, 1, exclude=np.zeros(3, int))


def test_memory_is_bounded_by_the_block_size_not_the_bank():
  import tracemalloc

  rng = np.random.default_rng(0)
  bank = rng.normal(size=(20_000, 64)).astype(np.float32)  # 4.9 MiB
  queries = rng.normal(size=(2_000, 64)).astype(np.float32)
  tracemalloc.start()
  try:
    result = knn.cosine_knn(queries, bank, 1, query_chunk=100, bank_chunk=1_000)
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  # A dense [2000, 20000] float32 distance matrix would be 153 MiB; one block is 0.4 MiB.
  assert peak < 1.5 * 2**20, f"peak {peak / 2**20:.2f} MiB"
  ref = NearestNeighbors(n_neighbors=1, metric="cosine", algorithm="brute").fit(bank).kneighbors(queries[:50])[1]
  np.testing.assert_array_equal(result.nearest[:50], ref[:, 0])
