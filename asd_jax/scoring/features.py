"""Turn per-layer pooled embeddings into the single vector per clip that the kNN scores.

An encoder gives `[clips, layers, dim]` pooled embeddings (one per chosen layer). Scoring
concatenates the chosen layers into `[clips, layers * dim]`; with per-layer normalisation each
layer is L2-normalised first, so every layer weighs the same in the cosine distance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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


LAYER_MODES = ("last", "all")


def model_vectors(key: str, embeddings: Mapping[str, Mapping[str, np.ndarray]], *, layers: str = "last",
                  sources: Sequence[str] = ()) -> np.ndarray:
  """The array a model's scorer sees, for every clip, from the embedding files' arrays (`embedding.store`).

  Args:
    key: the model's key in `embeddings` (unused for a concatenation model).
    embeddings: {model key: {"embedding": [clips, dim], optional "layer_embeddings": [clips, layers, dim] or
      "layers_<branch>": [clips, layers, dim]}} for the model itself or for its sources, clips in one order.
    layers: "last" (the pooled final layer, or a two-branch model's fused branch features) or "all"
      (multi-layer fusion: every layer's pooled output).
    sources: keys of the models a concatenation model joins (their final embeddings).

  Returns:
    [clips, dim] (last layer), [clips, layers, dim] (one encoder, all layers; the scorer concatenates them),
    [clips, sum of layers * dims] (two branches, all layers, every layer L2-normalised), or for a concatenation
    model [clips, sum of source dims] of L2-normalised source embeddings; float64 where normalised here.
  """
  if layers not in LAYER_MODES:
    raise ValueError(f"layers={layers!r}; expected one of {LAYER_MODES}")
  if sources:
    parts = [concat_layers(np.asarray(embeddings[s]["embedding"], np.float64)) for s in sources]
    return np.concatenate(parts, axis=1)
  own = embeddings[key]
  if layers == "all":
    names = sorted(k for k in own if k == "layer_embeddings" or k.startswith("layers_"))
    if not names:
      raise ValueError(f"model {key}: layers='all' needs per-layer embeddings (embed with all layers); "
                       f"found {sorted(own)}")
    if len(names) == 1:
      return own[names[0]]
    return np.concatenate([concat_layers(np.asarray(own[n], np.float64)) for n in names], axis=1)
  return own["embedding"]
