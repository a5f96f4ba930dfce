"""The dual-branch BEATs + EAT model: fused embeddings, featex training loss with SCAdaCos heads, inference.

`DualBranch` runs both encoders on their own fbanks and pools each branch's last layer into a clip
embedding; the fused embedding (the concatenation, `[B, Db + De]`) is what kNN scoring sees. Training
(`loss_fn`) mixes the inputs, encodes, exchanges EAT embeddings across the batch (see `featex.py` for the
label construction) and sums two SCAdaCos losses (see `scadacos.py`):

  main:   C classes,  fixed random centres, on `concat(beats, eat)` with mixed-up labels `[B, C]`, weight 1
  featex: 3C classes, trained centres,      on the exchanged fused embedding with labels `[B, 3C]`, weight 1

State split for the train step: model params `{'encoder': {'beats', 'eat'}, 'head': {'featex_centres'}}`
(LoRA factors over the q/v/out projections are merged into them before `loss_fn` is called; the featex
centres match the default trainable pattern `^head/`), and `extra = {'main_centres', 'main_scale',
'featex_scale'}`, which is never differentiated: the scales are re-estimated in every step and returned, the
main centres stay as initialised (as in the reference, where that head is not trainable).

Training and embedding go through the same CLIs as the single encoders (`configs/dual_branch.py`;
`asd_jax.models.networks.dual_branch_network` wires this module to the encoders and fbanks of `networks.ENCODERS`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from asd_jax.models import featex
from asd_jax.models import scadacos
from asd_jax.models.encoder_output import POOL_MEAN, EncoderOutput, pool_layers, pool_tokens

Params = Mapping[str, Any]


class DualBranch(nn.Module):
  """BEATs and EAT side by side.

  Attributes:
    beats: encoder called as `beats(fbank [B, T, 128], padding_mask, train=...) -> EncoderOutput`.
    eat: encoder with the same call signature.
    beats_pool: token pooling of the BEATs branch (`'mean'` or `'cls'`).
    eat_pool: token pooling of the EAT branch.
  """

  beats: nn.Module
  eat: nn.Module
  beats_pool: str = POOL_MEAN
  eat_pool: str = POOL_MEAN

  def encode(self, beats_fbank: jax.Array, eat_fbank: jax.Array, beats_padding_mask: jax.Array | None = None,
             eat_padding_mask: jax.Array | None = None, *,
             train: bool = False) -> tuple[EncoderOutput, EncoderOutput]:
    """Both encoders' outputs. `beats_fbank: [B, Tb, 128]`, `eat_fbank: [B, Te, 128]`, normalised."""
    return (self.beats(beats_fbank, beats_padding_mask, train=train),
            self.eat(eat_fbank, eat_padding_mask, train=train))

  def __call__(self, beats_fbank: jax.Array, eat_fbank: jax.Array, beats_padding_mask: jax.Array | None = None,
               eat_padding_mask: jax.Array | None = None, *,
               train: bool = False) -> tuple[jax.Array, jax.Array]:
    """Clip embeddings of the last layer of each branch: `(beats [B, Db], eat [B, De])`."""
    beats_out, eat_out = self.encode(beats_fbank, eat_fbank, beats_padding_mask, eat_padding_mask, train=train)
    return (pool_tokens(beats_out.features, beats_out.token_mask, beats_out.num_prefix_tokens, self.beats_pool),
            pool_tokens(eat_out.features, eat_out.token_mask, eat_out.num_prefix_tokens, self.eat_pool))

  def layer_features(self, beats_fbank: jax.Array, eat_fbank: jax.Array,
                     beats_padding_mask: jax.Array | None = None,
                     eat_padding_mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Pooled embedding of every layer of each branch: `(beats [B, Lb, Db], eat [B, Le, De])`."""
    beats_out, eat_out = self.encode(beats_fbank, eat_fbank, beats_padding_mask, eat_padding_mask)
    return pool_layers(beats_out, self.beats_pool), pool_layers(eat_out, self.eat_pool)


def fuse(beats_embedding: jax.Array, eat_embedding: jax.Array) -> jax.Array:
  """The fused embedding `[B, Db + De]` fed to the heads and to kNN: the concatenation."""
  return jnp.concatenate([beats_embedding, eat_embedding], axis=-1)


@dataclasses.dataclass(frozen=True)
class DualBranchLossConfig:
  """Settings of the featex + SCAdaCos training loss.

  Attributes:
    num_classes: C, classes of the label space (e.g. machine type x section x attributes x domain).
    num_subclusters: K, SCAdaCos centres per class.
    mixup_prob: probability that a sample is mixed with its partner.
    featex_prob: probability that a sample's EAT embedding is exchanged with its partner's.
    main_weight: weight of the C-class head's loss.
    featex_weight: weight of the 3C-class featex head's loss.
    min_scale, max_scale: bounds of the adaptive SCAdaCos scales.
  """

  num_classes: int
  num_subclusters: int = 16
  mixup_prob: float = 0.5
  featex_prob: float = 0.5
  main_weight: float = 1.0
  featex_weight: float = 1.0
  min_scale: float = scadacos.DEFAULT_MIN_SCALE
  max_scale: float = scadacos.DEFAULT_MAX_SCALE


NON_INPUT_KEYS = ("label", "valid")  # batch entries that are not mixed up


def fbank_inputs(inputs: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """Front end for batches that carry both fbanks: `{'beats_fbank', 'eat_fbank'}` -> the pair."""
  return inputs["beats_fbank"], inputs["eat_fbank"]


def wav_fbanks(inputs: Mapping[str, jax.Array], beats_config: Any = None, eat_config: Any = None
               ) -> tuple[jax.Array, jax.Array]:
  """Front end computing both fbanks from `{'wav': [B, samples]}` (16 kHz), so mixup acts on waveforms; the fbank
  configs default to `BEATS_FBANK` and `EAT_FBANK` (bind others with `functools.partial`)."""
  from asd_jax.audio import fbank as fb  # pylint: disable=import-outside-toplevel

  return (fb.fbank(inputs["wav"], beats_config or fb.BEATS_FBANK), fb.fbank(inputs["wav"], eat_config or fb.EAT_FBANK))


def init(rng: jax.Array, model: DualBranch, beats_fbank: jax.Array, eat_fbank: jax.Array,
         config: DualBranchLossConfig) -> tuple[dict[str, Any], dict[str, jax.Array]]:
  """Random `(params, extra)` for `model` and the two heads; fbanks are example inputs for the shapes.

  Pretrained encoder weights replace `params['encoder']['beats' | 'eat']` afterwards.
  """
  encoder_rng, main_rng, featex_rng = jax.random.split(rng, 3)
  encoder_params = model.init(encoder_rng, beats_fbank, eat_fbank)["params"]
  beats_emb, eat_emb = jax.eval_shape(lambda p: model.apply({"params": p}, beats_fbank, eat_fbank), encoder_params)
  fused_dim = beats_emb.shape[-1] + eat_emb.shape[-1]
  c, k = config.num_classes, config.num_subclusters
  params = {"encoder": encoder_params,
            "head": {"featex_centres": scadacos.init_centres(featex_rng, fused_dim, 3 * c, k)}}
  extra = {"main_centres": scadacos.init_centres(main_rng, fused_dim, c, k),
           "main_scale": jnp.asarray(scadacos.initial_scale(c, k), jnp.float32),
           "featex_scale": jnp.asarray(scadacos.initial_scale(3 * c, k), jnp.float32)}
  return params, extra


def loss_fn(params: Params, extra: Params, batch: Mapping[str, Any], rng: jax.Array, *, model: DualBranch,
            config: DualBranchLossConfig,
            frontend: Callable[[Any], tuple[jax.Array, jax.Array]] = fbank_inputs,
            ) -> tuple[jax.Array, tuple[dict[str, jax.Array], dict[str, jax.Array]]]:
  """Featex + SCAdaCos training loss of one batch (pure; bind `model`, `config`, `frontend` with partial).

  Args:
    params: plain model params `{'encoder': ..., 'head': {'featex_centres': [D, 3C*K]}}` (LoRA merged),
      differentiated.
    extra: `{'main_centres': [D, C*K], 'main_scale': (), 'featex_scale': ()}`, not differentiated.
    batch: `{'label': [B] int class ids in [0, C), 'valid': optional [B] 0/1 padding mask, and the input
      arrays [B, ...] (e.g. 'wav', or 'beats_fbank' and 'eat_fbank')}`; every entry but 'label' and 'valid'
      is mixed up. A valid sample whose partner is padding is neither mixed nor exchanged.
    rng: key for mixup, featex and dropout.
    model: the `DualBranch` module.
    config: loss settings.
    frontend: maps the (mixed) inputs to `(beats_fbank [B, Tb, 128], eat_fbank [B, Te, 128])`; the default
      reads precomputed fbanks, a waveform front end makes mixup act on waveforms as in the reference.

  Returns:
    `(loss, (metrics, new_extra))` (the train step's convention): `metrics` are scalars, `new_extra` carries
    the adapted scales.
  """
  mixup_rng, featex_rng, dropout_rng = jax.random.split(rng, 3)
  labels = jax.nn.one_hot(batch["label"], config.num_classes, dtype=jnp.float32)
  batch_size = labels.shape[0]
  valid = batch.get("valid")
  partner_valid = True if valid is None else featex.partner(valid) > 0
  lam, apply_mixup = featex.draw_mixup(mixup_rng, batch_size, config.mixup_prob)
  inputs = {key: value for key, value in batch.items() if key not in NON_INPUT_KEYS}
  inputs, labels = featex.mixup(inputs, labels, lam, apply_mixup & partner_valid)
  beats_fbank, eat_fbank = frontend(inputs)
  beats_emb, eat_emb = model.apply({"params": params["encoder"]}, beats_fbank, eat_fbank, train=True,
                                   rngs={"dropout": dropout_rng})

  k = config.num_subclusters
  bounds = {"min_scale": config.min_scale, "max_scale": config.max_scale, "weights": valid}
  main_loss, main_scale, main_metrics = scadacos.scadacos_loss(
      fuse(beats_emb, eat_emb), labels, extra["main_centres"], extra["main_scale"], num_subclusters=k, **bounds)
  exchanged = featex.draw_exchange(featex_rng, batch_size, config.featex_prob) & partner_valid
  featex_loss, featex_scale, featex_metrics = scadacos.scadacos_loss(
      featex.exchange_features(beats_emb, eat_emb, exchanged), featex.exchange_labels(labels, exchanged),
      params["head"]["featex_centres"], extra["featex_scale"], num_subclusters=k, **bounds)

  loss = config.main_weight * main_loss + config.featex_weight * featex_loss
  new_extra = dict(extra, main_scale=main_scale, featex_scale=featex_scale)
  metrics = {"loss": loss, "main_loss": main_loss, "featex_loss": featex_loss, "accuracy": main_metrics["accuracy"],
             "main_scale": main_scale, "featex_scale": featex_scale,
             "main_median_angle": main_metrics["median_angle"],
             "featex_median_angle": featex_metrics["median_angle"]}
  return loss, (metrics, new_extra)


def class_log_probabilities(model: DualBranch, params: Params, extra: Params, beats_fbank: jax.Array,
                            eat_fbank: jax.Array, *, num_subclusters: int) -> jax.Array:
  """Eval-mode log class probabilities `[B, C]` of the main head (fixed centres, the last adapted scale): what
  the training accuracy measures, without mixup or feature exchange."""
  cosines = scadacos.cosine_similarity(embed(model, params, beats_fbank, eat_fbank), extra["main_centres"])
  return scadacos.log_class_probabilities(cosines, extra["main_scale"], num_subclusters)


def embed(model: DualBranch, params: Params, beats_fbank: jax.Array, eat_fbank: jax.Array,
          beats_padding_mask: jax.Array | None = None, eat_padding_mask: jax.Array | None = None) -> jax.Array:
  """Fused inference embedding `[B, Db + De]` (nothing mixed or exchanged). `params` as from `init`."""
  beats_emb, eat_emb = model.apply({"params": params["encoder"]}, beats_fbank, eat_fbank,
                                   beats_padding_mask, eat_padding_mask)
  return fuse(beats_emb, eat_emb)


def embed_layers(model: DualBranch, params: Params, beats_fbank: jax.Array, eat_fbank: jax.Array,
                 beats_padding_mask: jax.Array | None = None,
                 eat_padding_mask: jax.Array | None = None) -> dict[str, jax.Array]:
  """Per-layer pooled features of each branch: `{'beats': [B, Lb, Db], 'eat': [B, Le, De]}`."""
  beats_layers, eat_layers = model.apply({"params": params["encoder"]}, beats_fbank, eat_fbank,
                                         beats_padding_mask, eat_padding_mask, method=DualBranch.layer_features)
  return {"beats": beats_layers, "eat": eat_layers}
