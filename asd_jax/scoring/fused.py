"""A fused system's scores of clips: the one path from per-model vectors to fused scores, decisions and the
nearest normal training clip, used by the pipeline (test clips) and the detector (new recordings) alike.

A system is a weight per model (`{model key: w}`). Given each model's fitted `scorer.Scorer` and the vectors its
scorer sees (`features.model_vectors`):

  1. `score_models`: per model, `scorer.score` (kNN distance to the memory bank, normalised score, the model's
     own decisions) and the normalised distances to every original training clip of the clip's section;
  2. `fit_thresholds`: per section, a threshold fitted on the fused leave-one-out training scores
     `sum_m w_m * train_scores_m` (`fused_train_scores`, which the report and `detect` draw too);
  3. `score_system`: fused score `sum_m w_m * normalised_m` (`fusion.fuse`), decision `fused > threshold` of
     the clip's section (`threshold.decide_by_section`), and the nearest normal training clip: the training clip
     with the smallest fused normalised distance `sum_m w_m (d_m - mean_m) / std_m`, which for one model is its
     nearest original clip.

Everything is float64 from float32 embeddings (see `scorer`), so a clip's fused score does not depend on which
other clips are scored with it, beyond ~D * 2^-53 / STD_FLOOR per model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from asd_jax.data import records as records_lib
from asd_jax.scoring import fusion
from asd_jax.scoring import scorer as scorer_lib
from asd_jax.scoring import threshold as threshold_lib

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
    out[section] = fusion.fuse([s.sections[section].train_scores for s in used], [weights[k] for k in keys])
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
  fused = fusion.fuse([model_scores[k].scores.normalized for k in keys], w)
  decisions = threshold_lib.decide_by_section(records, fused, thresholds)
  nearest = np.zeros(len(records), np.int64)
  for section, idx in records_lib.group_by_section(records).items():
    total = sum(wk * model_scores[k].train_distances[section] for k, wk in zip(keys, w))
    nearest[idx] = scorers[keys[0]].sections[section].train_clip[np.argmin(total, axis=1)]
  return FusedScores(scores=fused, decisions=decisions, thresholds=dict(thresholds), nearest_train_clip=nearest,
                     model_scores={k: model_scores[k].scores.normalized for k in keys})
