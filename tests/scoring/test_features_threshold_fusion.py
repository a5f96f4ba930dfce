"""Layer concatenation, thresholds, linear fusion and the simplex weight search."""

import math

import numpy as np
import pytest
import scipy.stats

from asd_jax.scoring import features, fusion, threshold


def test_concat_layers_normalises_each_layer_then_concatenates():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 3, 5))
  got = features.concat_layers(x, layers=[2, 0])
  expected = np.concatenate([x[:, i] / np.linalg.norm(x[:, i], axis=1, keepdims=True) for i in (2, 0)], axis=1)
  np.testing.assert_allclose(got, expected, rtol=1e-12)
  np.testing.assert_array_equal(features.concat_layers(x, normalize_layers=False), x.reshape(4, 15))
  np.testing.assert_array_equal(features.concat_layers(x[:, 0], normalize_layers=False), x[:, 0])
  with pytest.raises(ValueError, match=r"layer indices \[3\] out of range for 3 layers"):
    features.concat_layers(x, layers=[3])
  with pytest.raises(ValueError, match="must be"):
    features.concat_layers(np.zeros((2, 2, 2, 2)))


def test_gamma_threshold_recovers_the_distribution_percentile():
  rng = np.random.default_rng(0)
  a, loc, scale = 4.0, 0.5, 0.2
  scores = scipy.stats.gamma.rvs(a, loc=loc, scale=scale, size=4000, random_state=rng)
  true = scipy.stats.gamma.ppf(0.9, a, loc=loc, scale=scale)
  assert threshold.fit_threshold(scores) == pytest.approx(true, rel=0.02)
  assert threshold.fit_threshold(scores, method="quantile", quantile=0.8) == np.quantile(scores, 0.8)


def test_threshold_degenerate_and_bad_input():
  assert threshold.fit_threshold(np.full(5, 0.3)) == pytest.approx(0.3)
  with pytest.raises(ValueError, match="unknown threshold method"):
    threshold.fit_threshold(np.arange(5.0), method="max")
  with pytest.raises(ValueError, match="quantile must be in"):
    threshold.fit_threshold(np.arange(5.0), quantile=1.0)
  with pytest.raises(ValueError, match=">= 2 finite"):
    threshold.fit_threshold(np.array([1.0, np.nan]))
  np.testing.assert_array_equal(threshold.decide(np.array([0.1, 0.5, 0.9]), 0.5), [0, 0, 1])


def test_fuse_is_the_weighted_sum():
  s = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])
  np.testing.assert_allclose(fusion.fuse(s, [0.25, 0.75]), [0.25, 0.5 - 0.75, 0.75 + 3.0])
  with pytest.raises(ValueError, match="one weight per model"):
    fusion.fuse(s, [1.0])


def test_simplex_grid_enumerates_the_whole_simplex():
  grid = fusion.simplex_grid(6, 0.1)
  assert grid.shape == (math.comb(15, 5), 6) == (3003, 6)
  np.testing.assert_allclose(grid.sum(axis=1), 1.0)
  tenths = grid * 10
  np.testing.assert_allclose(tenths, np.round(tenths), atol=1e-12)
  assert len({tuple(np.round(r, 6)) for r in grid}) == 3003
  assert fusion.simplex_grid(3, 0.5).tolist() == [
      [0, 0, 1], [0, 0.5, 0.5], [0, 1, 0], [0.5, 0, 0.5], [0.5, 0.5, 0], [1, 0, 0]]
  with pytest.raises(ValueError, match="step must divide 1"):
    fusion.simplex_grid(3, 0.3)


def test_grid_search_finds_a_known_optimum():
  # One-hot model scores make the fused vector equal to the weights themselves, so the
  # objective -|w - w*|^2 has its unique maximum at the grid point w*.
  best_expected = np.array([0.2, 0.5, 0.3])
  objective = lambda fused: -float(np.sum((fused - best_expected) ** 2))
  best, value, values = fusion.grid_search(np.eye(3), objective, step=0.1)
  np.testing.assert_allclose(best, best_expected)
  assert value == pytest.approx(0.0, abs=1e-24)
  assert values.shape == (66,) and np.argmax(values) == np.flatnonzero(np.isclose(values, 0.0, atol=1e-24))[0]
