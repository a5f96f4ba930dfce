"""Decision thresholds fitted on normal training scores.

The DCASE baselines fit a gamma distribution to the anomaly scores of the normal training clips
of a section and call a test clip anomalous when its score exceeds the distribution's 90th
percentile. `fit_threshold` does that, or takes the empirical quantile instead. `decide_by_section` is the
one place where scores meet thresholds: a single model's (its own thresholds) and a fused system's alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.stats

from asd_jax.data import records as records_lib

METHODS = ("gamma", "quantile")


def fit_threshold(scores: np.ndarray, *, method: str = "gamma", quantile: float = 0.9) -> float:
  """Threshold from the normal training scores of one section (same scale as test scores).

  Args:
    scores: [n] scores of normal training clips (e.g. leave-one-out kNN scores); n >= 2.
    method: "gamma": `scipy.stats.gamma.fit` (shape, loc, scale all free) and its `quantile`
      point; "quantile": the empirical quantile (`np.quantile`, linear interpolation).
    quantile: in (0, 1); the baselines use 0.9.

  Returns:
    The threshold; a clip with score > threshold is decided anomalous.
  """
  scores = np.asarray(scores, dtype=np.float64).ravel()
  if method not in METHODS:
    raise ValueError(f"unknown threshold method {method!r}; expected one of {METHODS}")
  if not 0.0 < quantile < 1.0:
    raise ValueError(f"quantile must be in (0, 1), got {quantile}")
  if scores.size < 2 or not np.all(np.isfinite(scores)):
    raise ValueError(f"need >= 2 finite training scores to fit a threshold, got {scores.size}")
  if method == "quantile" or np.ptp(scores) == 0.0:
    return float(np.quantile(scores, quantile))
  shape, loc, scale = scipy.stats.gamma.fit(scores)
  threshold = float(scipy.stats.gamma.ppf(quantile, shape, loc=loc, scale=scale))
  if not np.isfinite(threshold):  # A degenerate fit; fall back to the data.
    return float(np.quantile(scores, quantile))
  return threshold


def decide(scores: np.ndarray, threshold: float) -> np.ndarray:
  """[n] int decisions: 1 (anomalous) where score > threshold, else 0."""
  return (np.asarray(scores) > threshold).astype(np.int64)


def decide_by_section(records: Sequence[records_lib.ClipRecord], scores: np.ndarray,
                      thresholds: Mapping[tuple[str, str], float]) -> np.ndarray:
  """[n] 0/1 decisions: score > the threshold of the clip's (machine, section)."""
  scores = np.asarray(scores)
  if scores.shape != (len(records),):
    raise ValueError(f"{len(records)} records but scores of shape {scores.shape}")
  out = np.zeros(len(records), np.int64)
  for key, idx in records_lib.group_by_section(records).items():
    if key not in thresholds:
      raise ValueError(f"{records[idx[0]].path}: no threshold for machine {key[0]!r} section {key[1]!r}")
    out[idx] = decide(scores[idx], thresholds[key])
  return out
