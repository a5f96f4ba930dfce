"""SCAdaCos loss and adaptive scale against hand-derived values and an independent NumPy loop reference."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asd_jax.models import scadacos


def _reference(x, labels, centres, scale, num_subclusters, eps=1e-7):
  """Loop-by-loop SCAdaCos (paper eq. 7-8): returns (new_scale, loss computed with new_scale)."""
  batch, _ = x.shape
  num_classes = labels.shape[1]
  cos = np.zeros((batch, num_classes, num_subclusters))
  for b in range(batch):
    xb = x[b] / math.sqrt(sum(v * v for v in x[b]))
    for c in range(num_classes):
      for k in range(num_subclusters):
        w = centres[:, c * num_subclusters + k]
        cos[b, c, k] = float(np.dot(xb, w / math.sqrt(sum(v * v for v in w))))
  b_sum = 0.0
  thetas = []
  for b in range(batch):
    b_sum += sum(math.exp(scale * cos[b, c, k]) for c in range(num_classes) for k in range(num_subclusters))
    theta = 0.0
    for c in range(num_classes):
      for k in range(num_subclusters):
        theta += labels[b, c] * math.acos(min(max(cos[b, c, k], -1 + eps), 1 - eps))
    thetas.append(theta)
  thetas.sort()
  mid = batch // 2
  median = thetas[mid] if batch % 2 else 0.5 * (thetas[mid - 1] + thetas[mid])
  new_scale = math.log(b_sum / batch) / math.cos(min(math.pi / 4, median))
  loss = 0.0
  for b in range(batch):
    denom = sum(math.exp(new_scale * cos[b, c, k]) for c in range(num_classes) for k in range(num_subclusters))
    for c in range(num_classes):
      p = sum(math.exp(new_scale * cos[b, c, k]) for k in range(num_subclusters)) / denom
      loss -= labels[b, c] * math.log(p)
  return new_scale, loss / batch, median


def test_initial_scale_is_adacos_fixed_scale():
  assert scadacos.initial_scale(10, 16) == pytest.approx(math.sqrt(2) * math.log(159))
  with pytest.raises(ValueError, match="at least 3 centres"):
    scadacos.initial_scale(1, 2)


def test_hand_computed_two_classes_two_subclusters():
  # 2-D embeddings; class 0 owns centres at 0 and 90 degrees, class 1 at 180 and 270 degrees.
  # Sample 0 at 0 degrees (class 0), sample 1 at 180 degrees (class 1); both see cosines {1, 0, -1, 0}.
  centres = np.array([[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, -1.0]], np.float32)
  x = np.array([[2.0, 0.0], [-0.5, 0.0]], np.float32)
  labels = np.eye(2, dtype=np.float32)
  s0 = math.sqrt(2) * math.log(3)  # initial scale for C*K = 4
  # Target angle: acos(1 - 1e-7) + pi/2 > pi/4 for both samples, so the cosine term is cos(pi/4).
  # B_avg = e^s0 + 2 + e^-s0 with e^s0 = 3^sqrt(2).
  b_avg = 3 ** math.sqrt(2) + 2 + 3 ** -math.sqrt(2)
  s1 = math.log(b_avg) / math.cos(math.pi / 4)
  # p(class 0 | sample 0) = (e^s1 + e^0) / (e^s1 + 2 + e^-s1); same for sample 1 and class 1.
  loss = -math.log((math.exp(s1) + 1) / (math.exp(s1) + 2 + math.exp(-s1)))
  assert s1 == pytest.approx(2.73984, abs=1e-4)
  assert loss == pytest.approx(0.062587, abs=1e-5)

  got_loss, got_scale, metrics = scadacos.scadacos_loss(x, labels, centres, s0, num_subclusters=2)
  np.testing.assert_allclose(got_scale, s1, rtol=1e-5)
  np.testing.assert_allclose(got_loss, loss, rtol=1e-5)
  # float32 rounds the clip bound 1 - 1e-7 to 1 - 2**-23, hence the loose tolerance on the tiny angle.
  np.testing.assert_allclose(metrics["median_angle"], math.acos(1 - 1e-7) + math.pi / 2, atol=1e-4)


@pytest.mark.parametrize("num_classes,num_subclusters,batch", [(3, 2, 5), (2, 4, 6)])
def test_matches_loop_reference_with_mixed_labels(num_classes, num_subclusters, batch):
  rng = np.random.default_rng(num_classes * 10 + batch)
  dim = 6
  x = rng.normal(size=(batch, dim)).astype(np.float32)
  centres = rng.normal(size=(dim, num_classes * num_subclusters)).astype(np.float32)
  # Mixed-up labels: sample b is lam * onehot(c_b) + (1 - lam) * onehot(c_partner).
  classes = rng.integers(0, num_classes, size=batch)
  lam = rng.uniform(size=batch)
  labels = np.zeros((batch, num_classes), np.float32)
  for b in range(batch):
    labels[b, classes[b]] += lam[b]
    labels[b, classes[batch - 1 - b]] += 1 - lam[b]
  scale = 3.0
  want_scale, want_loss, want_median = _reference(x.astype(np.float64), labels.astype(np.float64),
                                                  centres.astype(np.float64), scale, num_subclusters)
  loss, new_scale, metrics = scadacos.scadacos_loss(x, labels, centres, scale, num_subclusters=num_subclusters)
  np.testing.assert_allclose(new_scale, want_scale, rtol=1e-5)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["median_angle"], want_median, rtol=1e-5)
  # Accuracy under mixed labels: the label weight of the class with the largest summed probability, which for a
  # positive scale is the class whose sub-clusters' exp(s * cos) sum is largest.
  xn = x / np.linalg.norm(x, axis=1, keepdims=True)
  cos = (xn @ (centres / np.linalg.norm(centres, axis=0))).reshape(batch, num_classes, num_subclusters)
  predicted = np.argmax(np.exp(want_scale * cos).sum(-1), axis=-1)
  np.testing.assert_allclose(metrics["accuracy"], np.mean(labels[np.arange(batch), predicted]), rtol=1e-6)


def test_accuracy_of_one_hot_labels_is_the_fraction_right():
  # The hand-computed case above: each sample sits on a centre of its own class (cosine 1); swapping the
  # labels makes both wrong; padding the second sample out leaves one right sample.
  centres = np.array([[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, -1.0]], np.float32)
  x = np.array([[2.0, 0.0], [-0.5, 0.0]], np.float32)
  right = np.eye(2, dtype=np.float32)
  assert float(scadacos.scadacos_loss(x, right, centres, 2.0, num_subclusters=2)[2]["accuracy"]) == 1.0
  assert float(scadacos.scadacos_loss(x, right[::-1], centres, 2.0, num_subclusters=2)[2]["accuracy"]) == 0.0
  mixed = np.array([[0.5, 0.5], [0.0, 1.0]], np.float32)  # sample 0 predicted class 0, which has weight 0.5
  assert float(scadacos.scadacos_loss(x, mixed, centres, 2.0, num_subclusters=2)[2]["accuracy"]) == 0.75
  weights = np.array([1.0, 0.0], np.float32)
  assert float(scadacos.scadacos_loss(x, right[[0, 0]], centres, 2.0, num_subclusters=2,
                                      weights=weights)[2]["accuracy"]) == 1.0


def test_small_target_angle_uses_its_cosine():
  # K = 1 and embeddings 0.2 rad from their class centre: the median angle is below pi/4.
  angles = np.array([0.0, 2.0, 4.0])
  centres = np.stack([np.cos(angles), np.sin(angles)]).astype(np.float32)
  x = np.stack([np.cos(angles + 0.2), np.sin(angles + 0.2)], axis=1).astype(np.float32)
  labels = np.eye(3, dtype=np.float32)
  want_scale, want_loss, want_median = _reference(x.astype(np.float64), labels.astype(np.float64),
                                                  centres.astype(np.float64), 2.0, 1)
  assert want_median == pytest.approx(0.2, abs=1e-5)
  loss, new_scale, _ = scadacos.scadacos_loss(x, labels, centres, 2.0, num_subclusters=1)
  np.testing.assert_allclose(new_scale, want_scale, rtol=1e-5)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)


def test_without_adaptation_uses_given_scale():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 5)).astype(np.float32)
  centres = rng.normal(size=(5, 6)).astype(np.float32)
  labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
  loss, scale, _ = scadacos.scadacos_loss(x, labels, centres, 7.0, num_subclusters=2, adapt_scale=False)
  cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (centres / np.linalg.norm(centres, axis=0))
  p = np.exp(7.0 * cos)
  p = p.reshape(4, 3, 2).sum(-1) / p.sum(-1, keepdims=True)
  np.testing.assert_allclose(loss, -np.mean(np.log(p[np.arange(4), [0, 1, 2, 0]])), rtol=1e-5)
  assert float(scale) == 7.0


def test_scale_guard_stops_geometric_blow_up():
  # Embeddings sitting on their centres: the unguarded rule multiplies the scale by about sqrt(2) per step.
  centres = np.eye(4, dtype=np.float32)
  x = np.eye(4, dtype=np.float32) + 0.01
  labels = np.eye(2, dtype=np.float32)[[0, 0, 1, 1]]
  cos = scadacos.cosine_similarity(x, centres)
  scale = scadacos.initial_scale(2, 2)
  unguarded = scale
  for _ in range(300):
    unguarded, _ = scadacos.adapted_scale(cos, labels, unguarded, 2, max_scale=np.inf)
    scale, _ = scadacos.adapted_scale(cos, labels, scale, 2)
  assert not np.isfinite(float(unguarded)) or float(unguarded) > 1e30
  assert float(scale) == scadacos.DEFAULT_MAX_SCALE
  loss, _, _ = scadacos.scadacos_loss(x, labels, centres, scale, num_subclusters=2)
  assert np.isfinite(float(loss))


def test_non_finite_estimate_keeps_old_scale():
  cos = jnp.full((2, 4), jnp.nan)
  new, _ = scadacos.adapted_scale(cos, jnp.eye(2), 5.0, 2)
  assert float(new) == 5.0


def test_no_gradient_through_scale_and_gradient_through_centres():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
  centres = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
  labels = jnp.eye(3)[jnp.array([0, 1, 2, 1])]

  def loss(scale, centres):
    return scadacos.scadacos_loss(x, labels, centres, scale, num_subclusters=2)[0]

  d_scale, d_centres = jax.grad(loss, argnums=(0, 1))(4.0, centres)
  assert float(d_scale) == 0.0
  assert float(jnp.abs(d_centres).sum()) > 0.0


def test_rejects_mismatched_centres():
  with pytest.raises(ValueError, match="expected C\\*K"):
    scadacos.scadacos_loss(jnp.ones((2, 3)), jnp.eye(2), jnp.ones((3, 5)), 2.0, num_subclusters=2)


def test_weights_leave_padding_out_of_loss_and_scale():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(5, 4)).astype(np.float32)
  centres = rng.normal(size=(4, 6)).astype(np.float32)
  labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 1, 0]]
  weights = np.array([1, 1, 0, 1, 0], np.float32)
  keep = weights > 0
  want_scale, want_loss, want_median = _reference(x[keep].astype(np.float64), labels[keep].astype(np.float64),
                                                  centres.astype(np.float64), 2.5, 2)
  loss, scale, metrics = scadacos.scadacos_loss(x, labels, centres, 2.5, num_subclusters=2, weights=weights)
  np.testing.assert_allclose(scale, want_scale, rtol=1e-5)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["median_angle"], want_median, rtol=1e-5)
