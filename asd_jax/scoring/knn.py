"""Cosine k-nearest-neighbour search in chunked NumPy.

The anomaly score of a clip is its cosine distance to the nearest normal training embeddings.
Search is exact (brute force) and runs in blocks of queries x bank entries, so peak extra memory
is one `[query_chunk, bank_chunk]` similarity block plus the running top-k, whatever the bank
size: a 1,000,000 x 768 float32 bank (2.9 GiB) with 100,000 queries needs the two inputs plus
about 70 MiB for k=1 (about 200 MiB for k > 1) with the default blocks.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# One similarity block of 1024 x 16384 float32 values is 64 MiB.
DEFAULT_QUERY_CHUNK = 1024
DEFAULT_BANK_CHUNK = 16384


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
  """`x / max(||x||, eps)` along `axis`, in x's floating dtype (float32 for integer input)."""
  x = np.asarray(x)
  if not np.issubdtype(x.dtype, np.floating):
    x = x.astype(np.float32)
  norm = np.linalg.norm(x, axis=axis, keepdims=True)
  return x / np.maximum(norm, eps).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class KnnResult:
  """Result of a cosine kNN search for `n` queries.

  Attributes:
    distances: [n, k] cosine distances (1 - cosine similarity), ascending per row.
    indices: [n, k] bank row of each neighbour, in the same order.
  """

  distances: np.ndarray
  indices: np.ndarray

  @property
  def score(self) -> np.ndarray:
    """[n] mean cosine distance to the k nearest bank entries (the anomaly score)."""
    return self.distances.mean(axis=1)

  @property
  def nearest(self) -> np.ndarray:
    """[n] bank row of the nearest entry."""
    return self.indices[:, 0]


def _top_k(sims: np.ndarray, offset: int, k: int) -> tuple[np.ndarray, np.ndarray]:
  """The k largest similarities per row of a block `sims` [rows, m] and their column + offset."""
  if k == 1:  # argmax needs no [rows, m] index array
    cols = np.argmax(sims, axis=1)[:, None]
  elif k >= sims.shape[1]:
    cols = np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
  else:
    cols = np.argpartition(sims, sims.shape[1] - k, axis=1)[:, -k:]
  return np.take_along_axis(sims, cols, axis=1), cols + offset


def _merge(sims: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Keeps the k largest of small candidate lists `sims`, `idx` [rows, c] (c >= k)."""
  if sims.shape[1] == k:
    return sims, idx
  part = np.argpartition(sims, sims.shape[1] - k, axis=1)[:, -k:]
  return np.take_along_axis(sims, part, axis=1), np.take_along_axis(idx, part, axis=1)


def cosine_knn(
    queries: np.ndarray,
    bank: np.ndarray,
    k: int = 1,
    *,
    bank_is_normalized: bool = False,
    exclude: np.ndarray | None = None,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    bank_chunk: int = DEFAULT_BANK_CHUNK,
    dtype: np.dtype | type | None = None,
) -> KnnResult:
  """Exact k nearest bank entries of each query under cosine distance.

  Args:
    queries: [n, dim] query embeddings (any scale; normalised here, chunk by chunk).
    bank: [m, dim] memory bank. Not copied: its row norms are computed once and applied per
      chunk, unless `bank_is_normalized` says its rows already have unit norm.
    k: neighbours per query, 1 <= k <= m (minus one when `exclude` is given).
    bank_is_normalized: skip the bank normalisation.
    exclude: optional [n] int, a bank row that query i may not match (-1: none). Used for
      leave-one-out distances of the bank's own rows.
    query_chunk, bank_chunk: block sizes; peak extra memory is one float block of
      query_chunk * bank_chunk values, plus as many int64 indices when k > 1 (argpartition).
    dtype: compute dtype; default the queries' and bank's common float dtype (float32 for float32
      inputs). float64 makes each distance independent of the chunking and of the other queries to
      ~D * 2^-53 (the scorer's choice); float32 is faster and changes in the last bits with them.

  Returns:
    KnnResult with [n, k] distances (ascending) and bank indices.
  """
  queries = np.asarray(queries)
  bank = np.asarray(bank)
  if queries.ndim != 2 or bank.ndim != 2:
    raise ValueError(f"cosine_knn wants 2-D queries and bank, got {queries.shape} and {bank.shape}")
  if queries.shape[1] != bank.shape[1]:
    raise ValueError(f"query dim {queries.shape[1]} != bank dim {bank.shape[1]}")
  n, m = queries.shape[0], bank.shape[0]
  max_k = m - (1 if exclude is not None else 0)
  if not 1 <= k <= max_k:
    raise ValueError(f"k={k} must be in [1, {max_k}] for a bank of {m} entries")
  if exclude is not None:
    exclude = np.asarray(exclude, dtype=np.int64)
    if exclude.shape != (n,):
      raise ValueError(f"exclude must have shape ({n},), got {exclude.shape}")
  dtype = np.result_type(queries.dtype, bank.dtype, np.float32) if dtype is None else np.dtype(dtype)
  if bank_is_normalized:
    inv_bank_norm = None
  else:
    inv_bank_norm = np.empty(m, dtype)
    for lo in range(0, m, bank_chunk):
      rows = bank[lo : lo + bank_chunk].astype(dtype, copy=False)
      inv_bank_norm[lo : lo + bank_chunk] = 1.0 / np.maximum(np.linalg.norm(rows, axis=1), 1e-12)

  out_sims = np.empty((n, k), dtype)
  out_idx = np.empty((n, k), np.int64)
  for qlo in range(0, n, query_chunk):
    q = l2_normalize(queries[qlo : qlo + query_chunk].astype(dtype, copy=False))
    rows = q.shape[0]
    best_sims = np.full((rows, 0), -np.inf, dtype)
    best_idx = np.zeros((rows, 0), np.int64)
    for blo in range(0, m, bank_chunk):
      b = bank[blo : blo + bank_chunk].astype(dtype, copy=False)
      sims = q @ b.T  # [rows, chunk]
      if inv_bank_norm is not None:
        sims *= inv_bank_norm[blo : blo + b.shape[0]]
      if exclude is not None:
        ex = exclude[qlo : qlo + rows]
        hit = np.nonzero((ex >= blo) & (ex < blo + b.shape[0]))[0]
        sims[hit, ex[hit] - blo] = -np.inf
      top_sims, top_idx = _top_k(sims, blo, k)
      del sims
      best_sims = np.concatenate([best_sims, top_sims], axis=1)
      best_idx = np.concatenate([best_idx, top_idx], axis=1)
      if best_sims.shape[1] > k:
        best_sims, best_idx = _merge(best_sims, best_idx, k)
    order = np.argsort(-best_sims, axis=1, kind="stable")
    out_sims[qlo : qlo + rows] = np.take_along_axis(best_sims, order, axis=1)
    out_idx[qlo : qlo + rows] = np.take_along_axis(best_idx, order, axis=1)
  distances = np.clip(1.0 - out_sims, 0.0, 2.0)
  return KnnResult(distances=distances, indices=out_idx)
