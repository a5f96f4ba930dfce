"""Mixup and feature-exchange label construction on a small batch written out by hand."""

import jax
import jax.numpy as jnp
import numpy as np

from asd_jax.models import featex

# Batch of 4, C = 3 classes; sample b's partner is sample 3 - b.
CLASSES = [0, 2, 1, 1]
ONE_HOT = np.eye(3, dtype=np.float32)[CLASSES]


def test_mixup_by_hand():
  lam = jnp.array([0.25, 0.5, 0.75, 0.1])
  apply = jnp.array([True, False, True, False])
  x = {"wav": jnp.array([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0], [0.0, 8.0]])}
  mixed_x, mixed_y = featex.mixup(x, jnp.asarray(ONE_HOT), lam, apply)
  # Sample 0: 0.25 * x0 + 0.75 * x3; sample 2: 0.75 * x2 + 0.25 * x1; samples 1 and 3 unchanged.
  np.testing.assert_allclose(mixed_x["wav"], [[0.25, 6.0], [0.0, 2.0], [3.0, 3.5], [0.0, 8.0]])
  np.testing.assert_allclose(mixed_y, [
      [0.25, 0.75, 0.0],  # 0.25 * class 0 + 0.75 * class 1 (partner 3)
      [0.0, 0.0, 1.0],    # kept: class 2
      [0.0, 0.75, 0.25],  # 0.75 * class 1 + 0.25 * class 2 (partner 1)
      [0.0, 1.0, 0.0],    # kept: class 1
  ])


def test_exchange_labels_by_hand():
  exchanged = jnp.array([False, True, True, False])
  y = jnp.array([[0.25, 0.75, 0.0], [0.0, 0.0, 1.0], [0.0, 0.75, 0.25], [0.0, 1.0, 0.0]])
  got = featex.exchange_labels(y, exchanged)
  want = np.array([
      # own pair         | BEATs half (own y / 2) | EAT half (partner y / 2)
      [0.25, 0.75, 0.0,    0.0, 0.0, 0.0,           0.0, 0.0, 0.0],
      [0.0, 0.0, 0.0,      0.0, 0.0, 0.5,           0.0, 0.375, 0.125],  # partner 2
      [0.0, 0.0, 0.0,      0.0, 0.375, 0.125,       0.0, 0.0, 0.5],      # partner 1
      [0.0, 1.0, 0.0,      0.0, 0.0, 0.0,           0.0, 0.0, 0.0],
  ])
  np.testing.assert_allclose(got, want)
  np.testing.assert_allclose(got.sum(-1), 1.0)


def test_exchange_features_by_hand():
  beats = jnp.array([[1.0], [2.0], [3.0], [4.0]])
  eat = jnp.array([[10.0, 11.0], [20.0, 21.0], [30.0, 31.0], [40.0, 41.0]])
  got = featex.exchange_features(beats, eat, jnp.array([True, False, False, True]))
  np.testing.assert_allclose(got, [[1.0, 40.0, 41.0], [2.0, 20.0, 21.0], [3.0, 30.0, 31.0], [4.0, 10.0, 11.0]])


def test_odd_batch_middle_sample_is_its_own_partner():
  y = jnp.eye(3)
  got = featex.exchange_labels(y, jnp.array([True, True, True]))
  np.testing.assert_allclose(got[1], [0, 0, 0, 0, 0.5, 0, 0, 0.5, 0])


def test_mixup_keeps_dtype():
  x = jnp.ones((2, 3), jnp.bfloat16)
  mixed, _ = featex.mixup(x, jnp.eye(2), jnp.array([0.3, 0.6]), jnp.array([True, True]))
  assert mixed.dtype == jnp.bfloat16


def test_draws_are_uniform_and_bernoulli():
  lam, apply = featex.draw_mixup(jax.random.key(0), 20000, prob=0.5)
  assert lam.shape == (20000,) and apply.dtype == jnp.bool_
  assert 0.0 <= float(lam.min()) and float(lam.max()) < 1.0
  # U(0, 1): mean 1/2, variance 1/12; Bernoulli(1/2); 20000 samples give standard errors below 0.004.
  assert abs(float(lam.mean()) - 0.5) < 0.02
  assert abs(float(lam.var()) - 1 / 12) < 0.01
  assert abs(float(apply.mean()) - 0.5) < 0.02
  exchanged = featex.draw_exchange(jax.random.key(1), 20000, prob=0.25)
  assert abs(float(exchanged.mean()) - 0.25) < 0.02
  assert not bool(featex.draw_exchange(jax.random.key(2), 100, prob=0.0).any())
