"""Linear fusion of several models' normalised anomaly scores, and a weight search.

Each model's scores are first normalised per section (see `normalization`), so they share a
scale; the fused score is their weighted sum. `simplex_grid` lists all weight vectors on the
probability simplex with a given step, and `grid_search` picks the one that maximises a
caller-given objective (the official DCASE score on the development set).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np


def fuse(scores: Sequence[np.ndarray] | np.ndarray, weights: Sequence[float]) -> np.ndarray:
  """Weighted sum of model scores.

  Args:
    scores: [models, clips] normalised scores (or a list of [clips] arrays), one row per model.
    weights: [models] fusion weights (not renormalised).

  Returns:
    [clips] fused scores, float64.
  """
  stacked = np.asarray(np.stack([np.asarray(s, np.float64) for s in scores]))
  w = np.asarray(weights, np.float64)
  if stacked.ndim != 2 or w.shape != (stacked.shape[0],):
    raise ValueError(f"{len(w)} weights for scores of shape {stacked.shape}; expected one weight per model row")
  return w @ stacked


def simplex_grid(n_models: int, step: float = 0.1) -> np.ndarray:
  """All weight vectors with entries in {0, step, 2 step, ..., 1} that sum to 1.

  Returns:
    [C(n + m - 1, m - 1), n_models] float64 with n = round(1 / step), in lexicographic order
    (the first row puts all weight on the last model). 6 models at step 0.1 give 3003 rows.
  """
  if n_models < 1:
    raise ValueError(f"n_models must be >= 1, got {n_models}")
  n = int(round(1.0 / step))
  if n < 1 or not np.isclose(n * step, 1.0):
    raise ValueError(f"step must divide 1 evenly, got {step}")
  rows = []
  # Stars and bars: choose where the m - 1 dividers sit among n + m - 1 slots.
  for dividers in itertools.combinations(range(n + n_models - 1), n_models - 1):
    edges = (-1,) + dividers + (n + n_models - 1,)
    rows.append([edges[i + 1] - edges[i] - 1 for i in range(n_models)])
  return np.asarray(rows, np.float64) / n


def grid_search(
    scores: Sequence[np.ndarray] | np.ndarray,
    objective: Callable[[np.ndarray], float],
    *,
    step: float = 0.1,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, float, np.ndarray]:
  """Fusion weights that maximise `objective(fused_scores)` over a simplex grid.

  Args:
    scores: [models, clips] normalised development-set scores.
    objective: maps [clips] fused scores to a number to maximise (e.g. the official score).
    step: grid step of `simplex_grid`.
    weights: optional [candidates, models] grid to search instead.

  Returns:
    (best_weights [models], best_value, values [candidates]) where values follow the rows of
    the grid. Ties keep the first row in grid order.
  """
  stacked = np.stack([np.asarray(s, np.float64) for s in scores])
  grid = simplex_grid(stacked.shape[0], step) if weights is None else np.asarray(weights, np.float64)
  if grid.ndim != 2 or grid.shape[1] != stacked.shape[0]:
    raise ValueError(f"weight grid of shape {grid.shape} does not fit {stacked.shape[0]} models")
  fused = grid @ stacked  # [candidates, clips]
  values = np.array([float(objective(f)) for f in fused])
  best = int(np.argmax(values))
  return grid[best].copy(), float(values[best]), values
