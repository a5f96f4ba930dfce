"""SMOTE oversampling of the target domain (imbalanced-learn).

DCASE Task 2 gives about 990 source-domain and 10 target-domain normal training clips per
section. Oversampling the target clips with SMOTE to the source count, and putting the synthetic
embeddings into the kNN memory bank, lowers the target-domain false alarms. This module wraps
`imblearn.over_sampling.SMOTE` and handles the cases it refuses (too few target clips for k).
"""

from __future__ import annotations

import numpy as np
from imblearn.over_sampling import SMOTE


def oversample_target(
    source: np.ndarray,
    target: np.ndarray,
    *,
    k_neighbors: int = 2,
    n_total: int | None = None,
    seed: int = 0,
) -> np.ndarray:
  """Synthetic target-domain embeddings so that target originals + synthetic = `n_total`.

  SMOTE draws each synthetic point on the segment between a target embedding and one of its
  `k_neighbors` nearest target neighbours (Euclidean). With fewer than `k_neighbors + 1` target
  clips, k is lowered to `n_target - 1`; a single target clip is repeated (no segment exists).

  Args:
    source: [n_source, dim] source-domain training embeddings.
    target: [n_target, dim] target-domain training embeddings.
    k_neighbors: SMOTE's k (the DCASE 2025 report uses 2).
    n_total: wanted target count after oversampling; default n_source.
    seed: SMOTE's random_state.

  Returns:
    [max(n_total - n_target, 0), dim] synthetic embeddings, in target's dtype. Empty when there
    is no target clip or the target set is already large enough.
  """
  source = np.asarray(source)
  target = np.asarray(target)
  if source.ndim != 2 or target.ndim != 2:
    raise ValueError(f"source and target must be 2-D, got {source.shape} and {target.shape}")
  if source.shape[1] != target.shape[1] and source.size and target.size:
    raise ValueError(f"source dim {source.shape[1]} != target dim {target.shape[1]}")
  if k_neighbors < 1:
    raise ValueError(f"k_neighbors must be >= 1, got {k_neighbors}")
  n_source, n_target = source.shape[0], target.shape[0]
  n_total = n_source if n_total is None else int(n_total)
  n_new = n_total - n_target
  dim = target.shape[1]
  if n_target == 0 or n_new <= 0:
    return np.zeros((0, dim), target.dtype)
  if n_target == 1:
    return np.repeat(target, n_new, axis=0)
  k = min(k_neighbors, n_target - 1)
  # SMOTE wants a second class and never touches it: one dummy row serves.
  majority = np.zeros((1, dim), target.dtype)
  x = np.concatenate([majority.astype(target.dtype, copy=False), target])
  y = np.concatenate([np.zeros(len(majority), np.int64), np.ones(n_target, np.int64)])
  smote = SMOTE(sampling_strategy={1: n_total}, k_neighbors=k, random_state=seed)
  x_res, y_res = smote.fit_resample(x, y)
  synthetic = x_res[len(x) :]
  assert synthetic.shape[0] == n_new and np.all(y_res[len(x) :] == 1)
  return synthetic.astype(target.dtype, copy=False)
