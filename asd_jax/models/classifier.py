"""The fine-tuning classifier: front end -> encoder -> pooled clip embedding -> ArcFace head.

`Classifier` maps raw waveforms (or ready fbanks) to clip embeddings and cosine logits over the label
space. The encoder is any linen module with the BEATs/EAT contract
`encoder(fbank [batch, frames, mel], padding_mask, *, train) -> EncoderOutput`, so BEATs and EAT (and the
small test encoders) plug in unchanged; their own training-time behaviour (dropout, layer drop) follows the
`train` flag and the 'dropout' rng. Parameters are `{"encoder": ..., "head": {"kernel": [dim, classes]}}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from asd_jax.models import arcface
from asd_jax.models import encoder_output as eo


class Classifier(nn.Module):
  """Clip classifier with an ArcFace head.

  Attributes:
    encoder: encoder module (BEATs, EAT, ...), named "encoder" in the parameter tree.
    num_classes: size of the label space.
    frontend: optional jittable `wav [batch, samples] -> normalised fbank [batch, frames, mel]`; when set,
      the model takes waveforms, otherwise fbanks.
    dropout_rate: dropout on the pooled embedding before the head (training only).
    pool: token pooling, `encoder_output.POOL_MEAN` or `POOL_CLS`.
  """

  encoder: nn.Module
  num_classes: int
  frontend: Callable[[jax.Array], jax.Array] | None = None
  dropout_rate: float = 0.1
  pool: str = eo.POOL_MEAN

  @nn.compact
  def __call__(self, inputs: jax.Array, padding_mask: jax.Array | None = None, *, train: bool = False,
               all_layers: bool = False) -> dict[str, Any]:
    """Returns `embedding: [batch, dim]`, `cosine: [batch, classes]` (float32), and with `all_layers`
    `layer_embeddings: [batch, layers, dim]` (pooled output of every encoder layer)."""
    fbank = self.frontend(inputs) if self.frontend is not None else inputs
    encoded = self.encoder(fbank, padding_mask, train=train)
    embedding = eo.pool_tokens(encoded.features, encoded.token_mask, encoded.num_prefix_tokens, self.pool)
    dropped = nn.Dropout(self.dropout_rate, deterministic=not train)(embedding)
    out = {"embedding": embedding, "cosine": arcface.ArcFaceHead(self.num_classes, name="head")(dropped)}
    if all_layers:
      out["layer_embeddings"] = eo.pool_layers(encoded, self.pool)
    return out


def classification_loss(params: Any, extra: Any, batch: dict[str, jax.Array], rng: jax.Array, *, model: nn.Module,
                        scale: float = arcface.DEFAULT_SCALE, margin: float = arcface.DEFAULT_MARGIN
                        ) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any]]:
  """ArcFace loss of a `Classifier` on `batch = {"wav" [batch, samples], "label" [batch], ("valid")}`, with the
  train step's signature once `model` (and `scale`, `margin`) are bound (`functools.partial`).

  Takes plain model params (`asd_jax.finetuning.lora.with_lora` wraps it for the `{"model", "lora"}` tree);
  `extra` passes through. Metrics: `accuracy` (of the valid clips).
  """
  out = model.apply({"params": params}, batch["wav"], train=True, rngs={"dropout": rng})
  weights = batch.get("valid")
  loss = arcface.arcface_loss(out["cosine"], batch["label"], scale=scale, margin=margin, weights=weights)
  correct = (jnp.argmax(out["cosine"], -1) == batch["label"]).astype(jnp.float32)
  accuracy = jnp.mean(correct) if weights is None else jnp.sum(correct * weights) / jnp.maximum(jnp.sum(weights), 1.0)
  return loss, ({"accuracy": accuracy}, extra)
