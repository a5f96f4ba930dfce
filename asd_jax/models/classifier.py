"""The fine-tuning classifier: front end -> encoder -> pooled clip embedding -> ArcFace head.

`Classifier` maps raw waveforms (or ready fbanks) to clip embeddings and cosine logits over the label
space. The encoder is any linen module with the BEATs/EAT contract
`encoder(fbank [batch, frames, mel], padding_mask, *, train) -> EncoderOutput`, so BEATs and EAT (and the
small test encoders) plug in unchanged; their own training-time behaviour (dropout, layer drop) follows the
`train` flag and the 'dropout' rng. Parameters are `{"encoder": ..., "head": {"kernel": [dim, classes]}}`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from asd_jax.audio import augment
from asd_jax.models import arcface
from asd_jax.models import encoder_output as eo
from asd_jax.models import featex


class Classifier(nn.Module):
  """Clip classifier with an ArcFace head.

  Attributes:
    encoder: encoder module (BEATs, EAT, ...), named "encoder" in the parameter tree.
    num_classes: size of the label space.
    frontend: optional jittable `wav [batch, samples] -> normalised fbank [batch, frames, mel]`; when set,
      the model takes waveforms, otherwise fbanks.
    dropout_rate: dropout on the pooled embedding before the head (training only).
    pool: token pooling, `encoder_output.POOL_MEAN` or `POOL_CLS`.
    num_subclusters: ArcFace centres per class (`arcface.ArcFaceHead`; 1 = plain ArcFace).
  """

  encoder: nn.Module
  num_classes: int
  frontend: Callable[[jax.Array], jax.Array] | None = None
  dropout_rate: float = 0.1
  pool: str = eo.POOL_MEAN
  num_subclusters: int = 1

  @nn.compact
  def __call__(self, inputs: jax.Array, padding_mask: jax.Array | None = None, *, train: bool = False,
               all_layers: bool = False) -> dict[str, Any]:
    """Returns `embedding: [batch, dim]`, `cosine: [batch, classes]` (float32), and with `all_layers`
    `layer_embeddings: [batch, layers, dim]` (pooled output of every encoder layer)."""
    fbank = self.frontend(inputs) if self.frontend is not None else inputs
    encoded = self.encoder(fbank, padding_mask, train=train)
    embedding = eo.pool_tokens(encoded.features, encoded.token_mask, encoded.num_prefix_tokens, self.pool)
    dropped = nn.Dropout(self.dropout_rate, deterministic=not train)(embedding)
    out = {"embedding": embedding, "cosine": arcface.ArcFaceHead(self.num_classes, self.num_subclusters,
                                                                                  name="head")(dropped)}
    if all_layers:
      out["layer_embeddings"] = eo.pool_layers(encoded, self.pool)
    return out


def classification_loss(params: Any, extra: Any, batch: dict[str, jax.Array], rng: jax.Array, *, model: nn.Module,
                        scale: float = arcface.DEFAULT_SCALE, margin: float = arcface.DEFAULT_MARGIN,
                        mixup_prob: float = 0.0, masks: Mapping[str, int] | None = None
                        ) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any]]:
  """ArcFace loss of a `Classifier` on `batch = {"wav" [batch, samples], "label" [batch], ("valid")}`, with the
  train step's signature once `model` (and `scale`, `margin`, the augmentation) are bound (`functools.partial`).

  Takes plain model params (`asd_jax.finetuning.lora.with_lora` wraps it for the `{"model", "lora"}` tree);
  `extra` passes through. Metrics: `accuracy` (of the valid clips).
  Optional augmentation (both off by default; then the loss and rng use are those without it):
  `mixup_prob`: each clip is mixed with its partner (the batch reversed) with this probability, waveforms
  weighted `lam ~ U(0, 1)` as in `featex.mixup`, and its loss is `lam` times the ArcFace loss of its own label
  plus `1 - lam` times that of the partner's (a padded partner is never mixed in); the accuracy counts a
  prediction of either label with the same weights. `masks`: keyword arguments of `asd_jax.audio.augment.
  mask_bands` (time/frequency bands hidden in the fbank before the encoder).
  """
  masks = {k: int(v) for k, v in (masks or {}).items()}
  masking = any(masks.values())
  wav, labels = batch["wav"], batch["label"]
  weights = batch.get("valid")
  own = jnp.ones(labels.shape, jnp.float32)  # weight of each clip's own label
  if mixup_prob > 0:
    lam, apply = featex.draw_mixup(jax.random.fold_in(rng, 1), labels.shape[0], mixup_prob)
    if weights is not None:
      apply &= featex.partner(weights) > 0
    own = jnp.where(apply, lam, 1.0)
    wav = own[:, None] * wav + (1.0 - own[:, None]) * featex.partner(wav)
  inputs, applied = wav, model
  if masking:
    inputs = augment.mask_bands(jax.random.fold_in(rng, 2), model.frontend(wav), **masks)
    applied = model.clone(frontend=None)
  cosine = applied.apply({"params": params}, inputs, train=True, rngs={"dropout": rng})["cosine"]
  predicted = jnp.argmax(cosine, -1)
  if mixup_prob > 0:
    partner_labels = featex.partner(labels)

    def per_clip(y):
      return optax.softmax_cross_entropy_with_integer_labels(
          arcface.arcface_logits(cosine, y, scale=scale, margin=margin), y)

    per_clip_loss = own * per_clip(labels) + (1.0 - own) * per_clip(partner_labels)
    correct = own * (predicted == labels) + (1.0 - own) * (predicted == partner_labels)
    w = jnp.ones_like(own) if weights is None else weights.astype(jnp.float32)
    loss = jnp.sum(w * per_clip_loss) / jnp.maximum(jnp.sum(w), 1.0)
    accuracy = jnp.sum(w * correct) / jnp.maximum(jnp.sum(w), 1.0)
    return loss, ({"accuracy": accuracy}, extra)
  loss = arcface.arcface_loss(cosine, labels, scale=scale, margin=margin, weights=weights)
  correct = (predicted == labels).astype(jnp.float32)
  accuracy = jnp.mean(correct) if weights is None else jnp.sum(correct * weights) / jnp.maximum(jnp.sum(weights), 1.0)
  return loss, ({"accuracy": accuracy}, extra)
