"""Sub-cluster AdaCos (SCAdaCos): a cosine softmax over several centres per class with an adaptive scale.

Wilkinghoff, "Sub-cluster AdaCos: learning representations for anomalous sound detection", IJCNN 2021
(code: github.com/wilkinghoff/sub-cluster-AdaCos). Each of C classes owns K sub-cluster centres (columns of
`centres: [dim, C*K]`, column `c*K + k`). An embedding's class probability is the softmax over all C*K
scaled cosines, summed over the class's K centres; the loss is the cross-entropy against (possibly mixed-up)
soft labels `[batch, C]`.

The scale `s` is not trained. It starts at `sqrt(2) * log(C*K - 1)` and, in every training step, before the
loss is computed, is re-estimated from the batch without gradient (the AdaCos rule, paper eq. 7-8):

  B_avg = mean_b sum_j exp(s_old * cos[b, j])            (all C*K centres, target ones included)
  theta[b] = sum_j label[b, j // K] * arccos(cos[b, j])  (label-weighted angles to the target sub-clusters)
  s_new = log(B_avg) / cos(min(pi/4, median_b theta[b]))

Departures from the reference code, and why:
  * The reference also multiplies theta[b] by the number of non-zero labels of the sample (2 for a mixed-up
    pair). The author confirmed that factor is an error (sub-cluster-AdaCos issue #3); it is dropped here,
    as in the paper's eq. 8.
  * log(B_avg) is computed with a log-sum-exp over the whole batch (the reference subtracts the global max;
    the value is the same) and log class probabilities with log-sum-exps (the reference sums probabilities
    and lets Keras clip them to [1e-7, 1 - 1e-7]); results differ only where a probability is below 1e-7.
  * Guard: the rule gives s_new <= sqrt(2) * (s_old * max cos + log(C*K)), so once any embedding sits
    closer than 45 degrees to a centre the scale can grow geometrically, overflow and turn the loss into NaN
    (the reported failure of the original). The new scale is clipped to `[min_scale, max_scale]`, and a
    non-finite estimate keeps the old scale.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

ANGLE_EPS = 1e-7  # cosines are clipped to [-1 + eps, 1 - eps] before arccos (the reference's K.epsilon()).
DEFAULT_MIN_SCALE = 1.0
DEFAULT_MAX_SCALE = 64.0  # the usual fixed ArcFace scale; well above sqrt(2) * log(C*K - 1) for any DCASE C.


def initial_scale(num_classes: int, num_subclusters: int) -> float:
  """AdaCos's fixed scale `sqrt(2) * log(C*K - 1)`, the starting value of the adaptive scale."""
  num_centres = num_classes * num_subclusters
  if num_centres < 3:
    raise ValueError(f"SCAdaCos needs at least 3 centres (C*K); got C={num_classes}, K={num_subclusters}")
  return math.sqrt(2.0) * math.log(num_centres - 1)


def init_centres(rng: jax.Array, dim: int, num_classes: int, num_subclusters: int,
                 dtype=jnp.float32) -> jax.Array:
  """Glorot-uniform sub-cluster centres `[dim, C*K]` (column `c*K + k` is sub-cluster k of class c)."""
  return jax.nn.initializers.glorot_uniform()(rng, (dim, num_classes * num_subclusters), dtype)


def cosine_similarity(embeddings: jax.Array, centres: jax.Array) -> jax.Array:
  """Cosines `[batch, C*K]` between `embeddings: [batch, dim]` and the columns of `centres: [dim, C*K]`."""
  x = embeddings.astype(jnp.float32)
  w = centres.astype(jnp.float32)
  x = x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-24))
  w = w * jax.lax.rsqrt(jnp.maximum(jnp.sum(w * w, axis=0, keepdims=True), 1e-24))
  return x @ w


def log_class_probabilities(cosines: jax.Array, scale: jax.Array, num_subclusters: int) -> jax.Array:
  """Log class probabilities `[batch, C]`: log of the softmax over `scale * cosines` summed per class."""
  logits = scale * cosines
  batch, num_centres = logits.shape
  per_class = logits.reshape(batch, num_centres // num_subclusters, num_subclusters)
  return jax.nn.logsumexp(per_class, axis=-1) - jax.nn.logsumexp(logits, axis=-1, keepdims=True)


def adapted_scale(cosines: jax.Array, labels: jax.Array, scale: jax.Array, num_subclusters: int, *,
                  weights: jax.Array | None = None,
                  min_scale: float = DEFAULT_MIN_SCALE,
                  max_scale: float = DEFAULT_MAX_SCALE) -> tuple[jax.Array, jax.Array]:
  """The AdaCos scale re-estimated on a batch, without gradient.

  Args:
    cosines: `[batch, C*K]` cosines to every centre.
    labels: `[batch, C]` soft labels (one-hot or mixed up).
    scale: the current scale, a scalar.
    num_subclusters: K.
    weights: optional `[batch]` 0/1 validity of each sample (padding of a last batch); invalid samples are
      left out of B_avg and of the median.
    min_scale, max_scale: bounds the new scale is clipped to (the guard against blow-up).

  Returns:
    `(new_scale, median_angle)`: scalars; `median_angle` is the batch median of the label-weighted sum of
    angles (radians) to the target sub-clusters.
  """
  cosines = jax.lax.stop_gradient(cosines.astype(jnp.float32))
  labels = jax.lax.stop_gradient(labels.astype(jnp.float32))
  scale = jax.lax.stop_gradient(jnp.asarray(scale, jnp.float32))
  angles = jnp.arccos(jnp.clip(cosines, -1.0 + ANGLE_EPS, 1.0 - ANGLE_EPS))
  target_weights = jnp.repeat(labels, num_subclusters, axis=-1)  # [batch, C*K], column c*K + k
  target_angles = jnp.sum(target_weights * angles, axis=-1)  # [batch]
  if weights is None:
    log_b_avg = jax.nn.logsumexp(scale * cosines) - math.log(cosines.shape[0])
    median_angle = jnp.median(target_angles)
  else:
    valid = jax.lax.stop_gradient(weights) > 0
    log_b_avg = (jax.nn.logsumexp(jnp.where(valid[:, None], scale * cosines, -jnp.inf))
                 - jnp.log(jnp.sum(valid.astype(jnp.float32))))
    median_angle = jnp.nanmedian(jnp.where(valid, target_angles, jnp.nan))
  estimate = log_b_avg / jnp.cos(jnp.minimum(math.pi / 4, median_angle))
  new_scale = jnp.where(jnp.isfinite(estimate), jnp.clip(estimate, min_scale, max_scale), scale)
  return new_scale, median_angle


def scadacos_loss(embeddings: jax.Array, labels: jax.Array, centres: jax.Array, scale: jax.Array, *,
                  num_subclusters: int, adapt_scale: bool = True, weights: jax.Array | None = None,
                  min_scale: float = DEFAULT_MIN_SCALE,
                  max_scale: float = DEFAULT_MAX_SCALE) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
  """Mean SCAdaCos cross-entropy over a batch, and the scale to carry to the next step.

  Args:
    embeddings: `[batch, dim]`.
    labels: `[batch, C]` soft labels; rows sum to 1.
    centres: `[dim, C*K]` sub-cluster centres.
    scale: the current scale (non-trainable state), a scalar.
    num_subclusters: K.
    adapt_scale: re-estimate the scale on this batch first (training); False uses `scale` as is.
    weights: optional `[batch]` 0/1 sample validity; the loss is the mean over valid samples.
    min_scale, max_scale: guard bounds of the adapted scale.

  Returns:
    `(loss, new_scale, metrics)`: the loss uses `new_scale` (as the reference does) with the scale held
    constant for the gradient; `metrics` has `scale`, `median_angle` (radians; NaN without adaptation) and
    `accuracy` (mean label weight of each sample's most probable class: plain accuracy for one-hot labels).
  """
  num_classes = labels.shape[-1]
  if centres.shape[-1] != num_classes * num_subclusters:
    raise ValueError(f"SCAdaCos centres have {centres.shape[-1]} columns; expected C*K = "
                     f"{num_classes}*{num_subclusters} for labels of width {num_classes}")
  cosines = cosine_similarity(embeddings, centres)
  if adapt_scale:
    scale, median_angle = adapted_scale(cosines, labels, scale, num_subclusters, weights=weights,
                                        min_scale=min_scale, max_scale=max_scale)
  else:
    scale = jnp.asarray(scale, jnp.float32)
    median_angle = jnp.array(jnp.nan, jnp.float32)
  log_probs = log_class_probabilities(cosines, jax.lax.stop_gradient(scale), num_subclusters)
  per_sample = -jnp.sum(labels.astype(jnp.float32) * log_probs, axis=-1)
  # Accuracy under soft labels: the label weight of the predicted class (1/0 for one-hot labels; lam or 1 - lam
  # for a mixed-up pair whose predicted class is one of the two).
  hit = jnp.take_along_axis(labels.astype(jnp.float32), jnp.argmax(log_probs, axis=-1)[:, None], axis=-1)[:, 0]
  if weights is None:
    loss = jnp.mean(per_sample)
    accuracy = jnp.mean(hit)
  else:
    w = weights.astype(jnp.float32)
    loss = jnp.sum(w * per_sample) / jnp.maximum(jnp.sum(w), 1.0)
    accuracy = jnp.sum(w * hit) / jnp.maximum(jnp.sum(w), 1.0)
  return loss, scale, {"scale": scale, "median_angle": median_angle, "accuracy": jax.lax.stop_gradient(accuracy)}
