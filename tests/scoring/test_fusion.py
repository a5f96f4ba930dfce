"""The one fused-scoring path: fusion, thresholds, decisions, nearest clip, batch independence, the std floor.

Tolerances come from the computation, never from a run:
  * Scores are float64 from float32 embeddings. A float64 dot product of D terms of unit vectors is within
    gamma_D = D u / (1 - D u) of the exact value (u = 2^-53, Higham's bound, with sum |q_i b_i| <= 1 by
    Cauchy-Schwarz) in any summation order, so two orders differ by at most 2 gamma_D in a cosine distance,
    hence by 2 gamma_D / std in a normalised score, and by sum_m |w_m| times that in a fused one.
  * The std floor bounds what a float32-sized change of an embedding can do to a score (see
    `scorer.STD_FLOOR`): a one-ulp change of every component moves a unit vector by at most 2 eps32, a cosine
    distance by at most as much, a score by at most 2 eps32 / STD_FLOOR.
"""

import numpy as np
import pytest
from sklearn.metrics.pairwise import cosine_distances

from asd_jax.data.records import ClipRecord
from asd_jax.scoring import fusion, scorer as scorer_lib, threshold

U64 = 2.0**-53
EPS32 = float(np.finfo(np.float32).eps)
SECTIONS = [("fan", "00"), ("valve", "01")]


def _gamma(dim: int) -> float:
  return dim * U64 / (1 - dim * U64)


def _clips(split, n, rng, layers=3, dim=16, offset=0.0):
  records, rows = [], []
  for machine, section in SECTIONS:
    for i in range(n):
      domain = "target" if split == "train" and i >= n - 4 else "source"
      records.append(ClipRecord(f"/{split}/{machine}/section_{section}_{domain}_{split}_normal_{i:04d}.wav",
                                machine, section, split, domain, "normal"))
      rows.append(rng.normal(size=(layers, dim)) + offset)
  return np.asarray(rows, np.float32), records


@pytest.fixture(scope="module")
def two_models():
  rng = np.random.default_rng(0)
  train, train_records = _clips("train", 30, rng)
  test, test_records = _clips("test", 12, rng, offset=0.3)
  scorers = {"a": scorer_lib.fit(train, train_records), "b": scorer_lib.fit(train[:, ::-1], train_records,
                                                                           {"layers": [0, 1]})}
  vectors = {"a": test, "b": test[:, ::-1]}
  return scorers, vectors, train, train_records, test_records


def test_thresholds_are_fit_on_the_weighted_training_scores(two_models):
  scorers, _, train, train_records, _ = two_models
  weights = {"a": 0.3, "b": 0.7}
  got = fusion.fit_thresholds(weights, scorers)
  for key in SECTIONS:
    by_hand = 0.3 * scorers["a"].sections[key].train_scores + 0.7 * scorers["b"].sections[key].train_scores
    assert got[key] == pytest.approx(threshold.fit_threshold(by_hand))
  other = scorer_lib.fit(train[2:], train_records[2:])
  with pytest.raises(ValueError, match="other training clips"):
    fusion.fit_thresholds({"a": 0.5, "other": 0.5}, {"a": scorers["a"], "other": other})
  with pytest.raises(ValueError, match="at least one model"):
    fusion.fit_thresholds({"a": 0.0}, scorers)


def test_fused_scores_decisions_and_nearest_clip_by_hand(two_models):
  scorers, vectors, train, train_records, test_records = two_models
  weights = {"a": 0.25, "b": 0.75}
  thresholds = fusion.fit_thresholds(weights, scorers)
  models = fusion.score_models(scorers, vectors, test_records)
  got = fusion.score_system(weights, scorers, models, test_records, thresholds)
  terms = [0.25 * models["a"].scores.normalized, 0.75 * models["b"].scores.normalized]
  by_hand = terms[0] + terms[1]
  # Two float64 sums of the same two products, in any order: within 2 * 2 u sum_k |w_k s_k| of each other.
  assert np.all(np.abs(got.scores - by_hand) <= 4 * U64 * (np.abs(terms[0]) + np.abs(terms[1])))
  limits = np.array([thresholds[(r.machine, r.section)] for r in test_records])
  np.testing.assert_array_equal(got.decisions, (got.scores > limits).astype(int))
  clear = np.abs(by_hand - limits) > 4 * U64 * (np.abs(terms[0]) + np.abs(terms[1]))
  np.testing.assert_array_equal(got.decisions[clear], (by_hand > limits).astype(int)[clear])
  # Nearest normal clip: smallest weighted normalised cosine distance, distances from scikit-learn.
  views = {"a": lambda x: x, "b": lambda x: x[:, ::-1][:, :2]}
  test_x = {"a": vectors["a"], "b": vectors["b"][:, :2]}
  for key in SECTIONS:
    tr = np.array([i for i, r in enumerate(train_records) if (r.machine, r.section) == key])
    te = np.array([i for i, r in enumerate(test_records) if (r.machine, r.section) == key])
    total = 0.0
    for m, w in weights.items():
      unit = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)).reshape(len(x), -1)  # noqa: E731
      d = cosine_distances(unit(test_x[m][te].astype(np.float64)), unit(views[m](train[tr]).astype(np.float64)))
      state = scorers[m].sections[key]
      total = total + w * (d - state.mean) / state.std
    np.testing.assert_array_equal(got.nearest_train_clip[te], tr[np.argmin(total, axis=1)])
  assert set(got.model_scores) == {"a", "b"}


def test_scores_do_not_depend_on_the_other_clips_scored_with_them(two_models):
  scorers, vectors, _, _, test_records = two_models
  weights = {"a": 0.4, "b": 0.6}
  thresholds = fusion.fit_thresholds(weights, scorers)
  together = fusion.score_system(weights, scorers, fusion.score_models(scorers, vectors, test_records), test_records,
                                thresholds)
  dims = {"a": 3 * 16, "b": 2 * 16}
  for i, record in enumerate(test_records):
    one = {k: v[i:i + 1] for k, v in vectors.items()}
    alone = fusion.score_system(weights, scorers, fusion.score_models(scorers, one, [record]), [record], thresholds)
    key = (record.machine, record.section)
    bound = sum(w * 2 * _gamma(dims[m]) / scorers[m].sections[key].std for m, w in weights.items())
    assert abs(alone.scores[0] - together.scores[i]) <= bound + 4 * U64 * abs(together.scores[i])
    assert alone.nearest_train_clip[0] == together.nearest_train_clip[i]
    if abs(together.scores[i] - thresholds[key]) > bound:
      assert alone.decisions[0] == together.decisions[i]


def test_the_std_floor_keeps_float32_rounding_from_moving_scores():
  # Training clips that embed almost alike: the leave-one-out std of their distances is tiny.
  rng = np.random.default_rng(1)
  base = rng.normal(size=64).astype(np.float32)
  train = (base + 1e-6 * rng.normal(size=(20, 64))).astype(np.float32)
  records = [ClipRecord(f"/train/fan/section_00_source_train_normal_{i:04d}.wav", "fan", "00", "train", "source",
                        "normal") for i in range(20)]
  scorer = scorer_lib.fit(train, records, {"smote": False})
  state = scorer.sections[("fan", "00")]
  unfloored = np.std(np.asarray([1 - max(float(train[i] @ train[j]) / np.linalg.norm(train[i]) /
                                         np.linalg.norm(train[j]) for j in range(20) if j != i)
                                 for i in range(20)]))
  assert unfloored < scorer_lib.STD_FLOOR / 100 and state.std == scorer_lib.STD_FLOOR
  # A one-ulp change of every component of a clip's embedding (the size of float32 rounding).
  clip = (base + 1e-4 * rng.normal(size=64)).astype(np.float32)[None]
  nudged = np.nextafter(clip, np.float32(np.inf))
  test = [ClipRecord("/test/fan/section_00_source_test_normal_0000.wav", "fan", "00", "test")]
  a, b = scorer_lib.score(scorer, clip, test), scorer_lib.score(scorer, nudged, test)
  assert abs(a.normalized[0] - b.normalized[0]) <= 2 * EPS32 / scorer_lib.STD_FLOOR + 2 * _gamma(64) / state.std
