"""Score fusion: a system's fused scores of clips, and the search for fusion weights.

A system is a weight per model (`{model key: w}`), a linear fusion of the models' normalised anomaly scores.
This module is the one path from per-model vectors to a system's fused scores, decisions and the nearest
normal training clip, used by the pipeline (test clips) and the detector (new recordings) alike. Given each
model's fitted `scorer.Scorer` and the vectors its scorer sees (`features.model_vectors`):

  1. `score_models`: per model, `scorer.score` (kNN distance to the memory bank, normalised score, the model's
     own decisions) and the normalised distances to every original training clip of the clip's section;
  2. `fit_thresholds`: per section, a threshold fitted on the fused leave-one-out training scores
     `sum_m w_m * train_scores_m` (`fused_train_scores`, which the report and `detect` draw too);
  3. `score_system`: fused score `sum_m w_m * normalised_m` (`fuse`), decision `fused > threshold` of the
     clip's section (`threshold.decide_by_section`), and the nearest normal training clip: the training clip
     with the smallest fused normalised distance `sum_m w_m (d_m - mean_m) / std_m`, which for one model is its
     nearest original clip.

Everything is float64 from float32 embeddings (see `scorer`), so a clip's fused score does not depend on which
other clips are scored with it, beyond ~D * 2^-53 / STD_FLOOR per model. `simplex_grid` lists every weight
vector on the probability simplex with a given step, and `grid_search` picks the one that maximises a
caller-given objective (the official DCASE score on the development set: an upper bound, not a fair system).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from asd_jax.data import records as records_lib
from asd_jax.scoring import scorer as scorer_lib
from asd_jax.scoring import threshold as threshold_lib

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


# --- A system's fused scores -------------------------------------------------------------------------------------

SectionKey = scorer_lib.SectionKey


@dataclasses.dataclass(frozen=True)
class ModelScores:
  """One model's scores of n clips: `scores` (raw, normalised, nearest, decisions; `scorer.Scores`) and
  `train_distances` {section: [n_section, n_train_section] normalised distances to its training clips}."""

  scores: scorer_lib.Scores
  train_distances: dict[SectionKey, np.ndarray]


@dataclasses.dataclass(frozen=True)
class FusedScores:
  """A system's scores of n clips.

  Attributes:
    scores: [n] fused normalised scores.
    decisions: [n] 0/1, 1 where the score exceeds its section's threshold.
    thresholds: {(machine, section): threshold on the fused scale}.
    nearest_train_clip: [n] index into the scorers' `train_paths` of the nearest normal training clip.
    model_scores: {model key: [n] that model's normalised score}, for every weighted model.
  """

  scores: np.ndarray
  decisions: np.ndarray
  thresholds: dict[SectionKey, float]
  nearest_train_clip: np.ndarray
  model_scores: dict[str, np.ndarray]


def weighted(weights: Mapping[str, float]) -> list[str]:
  """The keys of the models a system uses (non-zero weight), in the order given."""
  return [k for k, w in weights.items() if w]


def _check_same_training_clips(scorers: Sequence[scorer_lib.Scorer], keys: Sequence[str]) -> None:
  first = scorers[0]
  for key, s in zip(keys[1:], scorers[1:]):
    if s.train_paths != first.train_paths:
      raise ValueError(f"model {key} was fitted on other training clips than model {keys[0]}")


def fused_train_scores(weights: Mapping[str, float], scorers: Mapping[str, scorer_lib.Scorer]
                       ) -> dict[SectionKey, np.ndarray]:
  """{section: [n_train] the system's fused normal training scores} `sum_m w_m * train_scores_m`: the
  leave-one-out scores its thresholds are fitted on (columns in the order of the scorers' `train_clip`)."""
  keys = weighted(weights)
  if not keys:
    raise ValueError("a system needs at least one model with non-zero weight")
  used = [scorers[k] for k in keys]
  _check_same_training_clips(used, keys)
  out = {}
  for section, state in used[0].sections.items():
    for k, s in zip(keys[1:], used[1:]):
      if section not in s.sections or not np.array_equal(s.sections[section].train_clip, state.train_clip):
        raise ValueError(f"model {k} was fitted on other training clips than model {keys[0]} for {section}")
    out[section] = fuse([s.sections[section].train_scores for s in used], [weights[k] for k in keys])
  return out


def fit_thresholds(weights: Mapping[str, float], scorers: Mapping[str, scorer_lib.Scorer], *,
                   method: str = "gamma", quantile: float = 0.9) -> dict[SectionKey, float]:
  """Per-section thresholds of a system, fitted on its fused normal training scores (`fused_train_scores`)."""
  return {section: threshold_lib.fit_threshold(train, method=method, quantile=quantile)
          for section, train in fused_train_scores(weights, scorers).items()}


def score_models(scorers: Mapping[str, scorer_lib.Scorer], vectors: Mapping[str, np.ndarray],
                 records: Sequence[records_lib.ClipRecord]) -> dict[str, ModelScores]:
  """`ModelScores` of `records` for every model of `scorers` (vectors: [clips, ...] per model, clip order of
  `records`)."""
  records = list(records)
  return {k: ModelScores(scorer_lib.score(s, vectors[k], records),
                         scorer_lib.train_clip_distances(s, vectors[k], records)) for k, s in scorers.items()}


def score_system(weights: Mapping[str, float], scorers: Mapping[str, scorer_lib.Scorer],
                 model_scores: Mapping[str, ModelScores], records: Sequence[records_lib.ClipRecord],
                 thresholds: Mapping[SectionKey, float]) -> FusedScores:
  """The fused scores, decisions and nearest normal training clips of `records` (see the module docstring)."""
  records = list(records)
  keys = weighted(weights)
  w = [weights[k] for k in keys]
  _check_same_training_clips([scorers[k] for k in keys], keys)
  fused = fuse([model_scores[k].scores.normalized for k in keys], w)
  decisions = threshold_lib.decide_by_section(records, fused, thresholds)
  nearest = np.zeros(len(records), np.int64)
  for section, idx in records_lib.group_by_section(records).items():
    total = sum(wk * model_scores[k].train_distances[section] for k, wk in zip(keys, w))
    nearest[idx] = scorers[keys[0]].sections[section].train_clip[np.argmin(total, axis=1)]
  return FusedScores(scores=fused, decisions=decisions, thresholds=dict(thresholds), nearest_train_clip=nearest,
                     model_scores={k: model_scores[k].scores.normalized for k in keys})
