"""Turn per-layer pooled embeddings into the single vector per clip that the kNN scores.

An encoder gives `[clips, layers, dim]` pooled embeddings (one per chosen layer). Scoring
concatenates the chosen layers into `[clips, layers * dim]`; with per-layer normalisation each
layer is L2-normalised first, so every layer weighs the same in the cosine distance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from asd_jax.scoring.knn import l2_normalize


def concat_layers(
    embeddings: np.ndarray,
    layers: Sequence[int] | None = None,
    *,
    normalize_layers: bool = True,
) -> np.ndarray:
  """Concatenates per-layer embeddings into one vector per clip.

  Args:
    embeddings: [clips, layers, dim] pooled embeddings, or [clips, dim] (one layer).
    layers: which layer indices (of axis 1) to keep, in this order; None keeps all.
    normalize_layers: L2-normalise each layer's vector before concatenating.

  Returns:
    [clips, len(layers) * dim] float32 (float64 input stays float64).
  """
  x = np.asarray(embeddings)
  if x.ndim == 2:
    x = x[:, None, :]
  if x.ndim != 3:
    raise ValueError(f"embeddings must be [clips, layers, dim] or [clips, dim], got shape {x.shape}")
  if not np.issubdtype(x.dtype, np.floating):
    x = x.astype(np.float32)
  if layers is not None:
    layers = list(layers)
    bad = [i for i in layers if not -x.shape[1] <= i < x.shape[1]]
    if bad:
      raise ValueError(f"layer indices {bad} out of range for {x.shape[1]} layers")
    x = x[:, layers, :]
  if normalize_layers:
    x = l2_normalize(x, axis=-1)
  return x.reshape(x.shape[0], -1)
