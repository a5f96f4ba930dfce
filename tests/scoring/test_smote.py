"""SMOTE oversampling: counts, points on segments to target neighbours, small-target cases."""

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from asd_jax.scoring import smote


def _on_segment_to_neighbour(point, target, k):
  """True when `point` = x_i + t (x_j - x_i), t in [0, 1], with j among i's k nearest targets."""
  nn = NearestNeighbors(n_neighbors=k + 1).fit(target)
  _, idx = nn.kneighbors(target)
  for i in range(len(target)):
    for j in idx[i, 1:]:
      d = target[j] - target[i]
      t = float(np.dot(point - target[i], d) / np.dot(d, d))
      if -1e-9 <= t <= 1 + 1e-9 and np.allclose(target[i] + t * d, point, atol=1e-9):
        return True
  return False


def test_oversamples_target_to_source_count_on_neighbour_segments():
  rng = np.random.default_rng(0)
  source, target = rng.normal(size=(30, 5)), rng.normal(size=(6, 5)) + 3
  synthetic = smote.oversample_target(source, target, k_neighbors=2, seed=1)
  assert synthetic.shape == (24, 5)
  assert all(_on_segment_to_neighbour(p, target, 2) for p in synthetic)
  # With k=2, a point on a segment to the 3rd..5th neighbour would be wrong: check one is not.
  assert not _on_segment_to_neighbour(target.mean(0) + 10, target, 2)


def test_deterministic_per_seed():
  rng = np.random.default_rng(1)
  source, target = rng.normal(size=(20, 4)), rng.normal(size=(5, 4))
  a = smote.oversample_target(source, target, seed=3)
  b = smote.oversample_target(source, target, seed=3)
  c = smote.oversample_target(source, target, seed=4)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_too_small_target_lowers_k():
  rng = np.random.default_rng(2)
  source, target = rng.normal(size=(10, 3)), rng.normal(size=(2, 3))
  synthetic = smote.oversample_target(source, target, k_neighbors=5)
  assert synthetic.shape == (8, 3)
  assert all(_on_segment_to_neighbour(p, target, 1) for p in synthetic)


def test_single_target_clip_is_repeated_and_empty_cases():
  source, target = np.ones((4, 3)), np.arange(3.0)[None]
  np.testing.assert_array_equal(smote.oversample_target(source, target), np.repeat(target, 3, 0))
  assert smote.oversample_target(source, np.zeros((0, 3))).shape == (0, 3)
  assert smote.oversample_target(source[:2], np.ones((5, 3))).shape == (0, 3)


def test_n_total_overrides_source_count_and_no_source_needed():
  rng = np.random.default_rng(3)
  target = rng.normal(size=(4, 3))
  assert smote.oversample_target(np.zeros((0, 3)), target, n_total=11).shape == (7, 3)


def test_bad_arguments():
  with pytest.raises(ValueError, match="k_neighbors must be >= 1"):
    smote.oversample_target(np.ones((3, 2)), np.ones((2, 2)), k_neighbors=0)
  with pytest.raises(ValueError, match="source dim 2 != target dim 3"):
    smote.oversample_target(np.ones((3, 2)), np.ones((2, 3)))
