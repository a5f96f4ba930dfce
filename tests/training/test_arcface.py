"""ArcFace loss against a value worked out by hand, and the head's cosine outputs."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from asd_jax.models import arcface


def test_arcface_loss_matches_hand_computation():
  # Two clips, three classes. Clip 0: class 1, cos = [0.2, 0.8, -0.1]; clip 1: class 2, cos = [0.5, 0.1, 0.3].
  cosine = np.array([[0.2, 0.8, -0.1], [0.5, 0.1, 0.3]], np.float32)
  labels = np.array([1, 2])
  s, m = 30.0, 0.2
  # Target logit: cos(arccos(c) + m), written out with the angle itself.
  t0 = math.cos(math.acos(0.8) + m)
  t1 = math.cos(math.acos(0.3) + m)
  logits0 = [s * 0.2, s * t0, s * -0.1]
  logits1 = [s * 0.5, s * 0.1, s * t1]
  ce0 = -logits0[1] + math.log(sum(math.exp(v) for v in logits0))
  ce1 = -logits1[2] + math.log(sum(math.exp(v) for v in logits1))
  expected = (ce0 + ce1) / 2
  got = arcface.arcface_loss(jnp.asarray(cosine), jnp.asarray(labels), scale=s, margin=m)
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_arcface_zero_margin_is_scaled_softmax_and_weights_mask_clips():
  rng = np.random.default_rng(0)
  cosine = rng.uniform(-1, 1, (4, 5)).astype(np.float32)
  labels = np.array([0, 3, 4, 1])
  logits = 10.0 * cosine
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  per_clip = -log_probs[np.arange(4), labels]
  got = arcface.arcface_loss(cosine, labels, scale=10.0, margin=0.0)
  np.testing.assert_allclose(float(got), per_clip.mean(), rtol=1e-5)
  weights = np.array([1, 0, 1, 0], np.float32)
  got = arcface.arcface_loss(cosine, labels, scale=10.0, margin=0.0, weights=weights)
  np.testing.assert_allclose(float(got), per_clip[[0, 2]].mean(), rtol=1e-5)


def test_margin_past_pi_uses_monotone_continuation():
  # theta close to pi: cos(theta + m) would increase again; the logit must stay below cos(theta).
  cosine = jnp.array([[-0.999, 0.0]])
  logits = arcface.arcface_logits(cosine, jnp.array([0]), scale=1.0, margin=0.2)
  expected = -0.999 - math.sin(0.2) * 0.2
  np.testing.assert_allclose(float(logits[0, 0]), expected, rtol=1e-6)


def test_head_outputs_cosines():
  head = arcface.ArcFaceHead(num_classes=3)
  x = jax.random.normal(jax.random.key(0), (4, 6))
  params = head.init(jax.random.key(1), x)
  cos = head.apply(params, x)
  w = np.asarray(params["params"]["kernel"])
  xn = np.asarray(x) / np.linalg.norm(np.asarray(x), axis=1, keepdims=True)
  np.testing.assert_allclose(np.asarray(cos), xn @ (w / np.linalg.norm(w, axis=0)), rtol=1e-5, atol=1e-6)


def test_subcentre_head_takes_each_class_best_centre():
  # K = 3 centres per class, column c * K + k: a clip's cosine to class c is its best of columns 3c..3c+2,
  # computed here from the kernel with NumPy.
  head = arcface.ArcFaceHead(num_classes=4, num_subclusters=3)
  x = jax.random.normal(jax.random.key(0), (5, 6))
  params = head.init(jax.random.key(1), x)
  w = np.asarray(params["params"]["kernel"], np.float64)
  assert w.shape == (6, 12)
  xn = np.asarray(x, np.float64) / np.linalg.norm(np.asarray(x, np.float64), axis=1, keepdims=True)
  all_cos = xn @ (w / np.linalg.norm(w, axis=0))
  expected = np.stack([all_cos[:, 3 * c:3 * c + 3].max(axis=1) for c in range(4)], axis=1)
  # float32 against float64: each L2 normalisation (a sum of 6 squares, a sqrt, a divide) and the 6-term dot
  # product of unit vectors (|sum of |products|| <= 1) each add at most about dim eps32 -> bound (3 * dim) eps32.
  np.testing.assert_allclose(np.asarray(head.apply(params, x)), expected, rtol=0, atol=18 * np.finfo(np.float32).eps)


def test_one_subcentre_is_plain_arcface_with_the_same_parameters():
  x = jax.random.normal(jax.random.key(2), (3, 5))
  plain = arcface.ArcFaceHead(num_classes=4)
  params = plain.init(jax.random.key(3), x)
  one = arcface.ArcFaceHead(num_classes=4, num_subclusters=1)
  assert jax.tree.map(np.shape, one.init(jax.random.key(3), x)) == jax.tree.map(np.shape, params)
  np.testing.assert_array_equal(np.asarray(one.apply(params, x)), np.asarray(plain.apply(params, x)))


def test_subcentre_count_below_one_is_refused():
  with np.testing.assert_raises_regex(ValueError, "num_subclusters must be >= 1"):
    arcface.ArcFaceHead(num_classes=2, num_subclusters=0).init(jax.random.key(0), jnp.ones((1, 3)))
