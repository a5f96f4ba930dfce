"""ArcFace: a cosine classification head and its additive angular margin loss.

The head is a bias-free dense layer whose input and class weight vectors are both L2-normalised, so its
outputs are cosines between a clip embedding and each class centre. The loss (Deng et al., 2019) adds an
angular margin `m` to the angle of the true class and scales all cosines by `s` before the softmax
cross-entropy. The DCASE 2025 BEATs+EAT report fine-tunes with ArcFace but gives no s or m; the defaults
s=30, m=0.2 are this project's choice: with a few dozen classes s=30 keeps the softmax sharp enough that the
margin matters (ArcFace's own s=64 is for thousands of identities), and m=0.2 (about 11.5 degrees) is smaller
than face recognition's 0.5 because machine/attribute classes overlap far more than identities.

Sub-centres (Deng et al., "Sub-center ArcFace", ECCV 2020): with `num_subclusters` K > 1 each class has K
centres and a clip's cosine to a class is its largest cosine to any of them, so a class may hold several modes
(recording conditions, unlabelled variants) without pulling them into one; the loss is unchanged. It is the
single-encoder counterpart of the dual-branch model's SCAdaCos sub-clusters (`asd_jax.models.scadacos`), which
use a soft maximum and an adaptive scale instead. K = 1 is plain ArcFace.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

DEFAULT_SCALE = 30.0
DEFAULT_MARGIN = 0.2


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """`x / max(||x||, eps)` along `axis`."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
  return x / jnp.maximum(norm, eps)


class ArcFaceHead(nn.Module):
  """Cosine similarities `[batch, classes]` between embeddings `[batch, dim]` and learned class centres.

  Attributes:
    num_classes: size of the label space.
    num_subclusters: K centres per class (column `c * K + k` of the kernel); a class's cosine is the largest
      of its K.
    dtype: compute dtype; the class centres (`kernel: [dim, classes * K]`) are float32 parameters and the
      cosines are computed in float32 (they feed a scaled softmax, where bfloat16 rounding is visible).
  """

  num_classes: int
  num_subclusters: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, embedding: jax.Array) -> jax.Array:
    if self.num_subclusters < 1:
      raise ValueError(f"ArcFaceHead: num_subclusters must be >= 1, got {self.num_subclusters}")
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (embedding.shape[-1], self.num_classes * self.num_subclusters), jnp.float32)
    cosine = l2_normalize(embedding.astype(jnp.float32)) @ l2_normalize(kernel, axis=0)
    if self.num_subclusters == 1:
      return cosine
    return jnp.max(cosine.reshape(*cosine.shape[:-1], self.num_classes, self.num_subclusters), axis=-1)


def arcface_logits(cosine: jax.Array, labels: jax.Array, *, scale: float = DEFAULT_SCALE,
                   margin: float = DEFAULT_MARGIN) -> jax.Array:
  """Margin-adjusted, scaled logits `[batch, classes]` from cosines `[batch, classes]` and labels `[batch]`.

  The true-class logit becomes `s * cos(theta + m)`; others stay `s * cos(theta)`. Where `theta + m` would
  pass pi (cos(theta+m) stops decreasing) the usual linear continuation `cos(theta) - m sin(m)` is used, so
  the target logit stays monotone in theta.
  """
  cosine = cosine.astype(jnp.float32)
  sine = jnp.sqrt(jnp.clip(1.0 - jnp.square(cosine), 0.0, 1.0))
  with_margin = cosine * math.cos(margin) - sine * math.sin(margin)
  with_margin = jnp.where(cosine > math.cos(math.pi - margin), with_margin,
                          cosine - math.sin(math.pi - margin) * margin)
  is_target = jax.nn.one_hot(labels, cosine.shape[-1], dtype=jnp.bool_)
  return scale * jnp.where(is_target, with_margin, cosine)


def arcface_loss(cosine: jax.Array, labels: jax.Array, *, scale: float = DEFAULT_SCALE,
                 margin: float = DEFAULT_MARGIN, weights: jax.Array | None = None) -> jax.Array:
  """Mean ArcFace cross-entropy (scalar) over the batch; `weights: [batch]` masks or weights clips."""
  logits = arcface_logits(cosine, labels, scale=scale, margin=margin)
  per_clip = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  if weights is None:
    return jnp.mean(per_clip)
  weights = weights.astype(jnp.float32)
  return jnp.sum(per_clip * weights) / jnp.maximum(jnp.sum(weights), 1.0)
