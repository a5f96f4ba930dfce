"""What an EAT pre-training run computes: encoder and decoder sizes, masking, targets, losses, EMA.

`PretrainingConfig` gathers the settings of upstream's `Data2VecMultiConfig` that EAT uses, in one frozen
dataclass; `from_fairseq_cfg` reads them from a released checkpoint's `cfg` (refusing settings this
implementation does not have, with their names), and `EAT_BASE_PRETRAINING` / `EAT_LARGE_PRETRAINING` are
upstream's `config/pretraining_AS2M.yaml` / `pretraining_AS2M_large.yaml`. Figures (both yamls):

| setting | base | large |
| --- | --- | --- |
| depth x dim, heads | 12 x 768, 12 | 24 x 1024, 16 |
| decoder layers, kernel, dim (16 groups) | 6, 3, 768 | 3, 5, 1024 |
| mask_prob, mask_prob_adjust (inverse blocks of 5) | 0.8, 0.07 | 0.75, 0.1 |
| average_top_k_layers | 12 | 24 |
| EMA decay 0.9998 -> 0.99999 over | 100,000 updates | 150,000 updates |
| clone_batch, cls_loss, mask_noise_std | 16, 1, 0.01 | 16, 1, 0.01 |
| targets | instance norm per layer, layer norm of the mean | same |
| optimiser (the trainer's config) | Adam (0.9, 0.95), wd 0.05, lr 5e-4 | lr 4e-4 |
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from asd_jax.models import eat
from asd_jax.models import eat_decoder
from asd_jax.pretraining import ema as ema_lib
from asd_jax.pretraining import masking


@dataclasses.dataclass(frozen=True)
class TargetConfig:
  """How the teacher's block outputs become targets, and how predictions are scored (upstream names).

  Attributes:
    average_top_k_layers: targets average the last K blocks' outputs.
    end_of_block_targets: average each block's output (after norm2) instead of its MLP output before the
      residual (upstream's default and EAT's setting: False, "FFN targets").
    instance_norm_target_layer / batch_norm_target_layer / layer_norm_target_layer: normalise each block's
      output before averaging: per clip and channel over patches (instance), per channel over clips and
      patches (batch), per patch over channels (layer); eps 1e-5, no affine.
    layer_norm_targets / instance_norm_targets: normalise the average (over channels / over patches).
    loss_beta: 0 = squared error, else smooth L1 with this beta.
    loss_scale: error scale; None = 1 / sqrt(dim).
    d2v_loss: weight of the frame (masked patch) regression.
    cls_loss: weight of the utterance loss: the student's CLS output regresses the mean of the clip's
      patch targets, scaled by the number of masked patches (upstream's normalisation, see objective).
  """

  average_top_k_layers: int = 12
  end_of_block_targets: bool = False
  instance_norm_target_layer: bool = True
  batch_norm_target_layer: bool = False
  layer_norm_target_layer: bool = False
  layer_norm_targets: bool = True
  instance_norm_targets: bool = False
  loss_beta: float = 0.0
  loss_scale: float | None = None
  d2v_loss: float = 1.0
  cls_loss: float = 1.0


@dataclasses.dataclass(frozen=True)
class PretrainingConfig:
  """Everything the pre-training objective and step need besides the optimiser and the data.

  Attributes:
    encoder: the EAT encoder (student and teacher share it).
    decoder: the CNN decoder.
    targets: target construction and losses.
    mask: the student's block masks.
    ema: teacher decay schedule.
    clone_batch: masked student views per clip (the teacher runs once per clip).
    mask_noise_std: mask tokens are N(0, std^2) noise.
  """

  encoder: eat.EATConfig = eat.EAT_BASE
  decoder: eat_decoder.DecoderConfig = eat_decoder.DECODER_BASE
  targets: TargetConfig = TargetConfig()
  mask: masking.MaskConfig = masking.MaskConfig()
  ema: ema_lib.EmaConfig = ema_lib.EmaConfig()
  clone_batch: int = 16
  mask_noise_std: float = 0.01

  def __post_init__(self):
    if not 1 <= self.targets.average_top_k_layers <= self.encoder.depth:
      raise ValueError(f"average_top_k_layers {self.targets.average_top_k_layers} not in [1, depth="
                       f"{self.encoder.depth}]")
    if self.clone_batch < 1:
      raise ValueError(f"clone_batch must be >= 1, got {self.clone_batch}")

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "PretrainingConfig":
    d = dict(d)
    return cls(encoder=eat.EATConfig(**d.pop("encoder")), decoder=eat_decoder.DecoderConfig(**d.pop("decoder")),
               targets=TargetConfig(**d.pop("targets")), mask=masking.MaskConfig(**d.pop("mask")),
               ema=ema_lib.EmaConfig(**d.pop("ema")), **d)

  @classmethod
  def from_fairseq_cfg(cls, cfg: Mapping[str, Any]) -> "PretrainingConfig":
    """From a fairseq EAT checkpoint's `cfg` (whole dict or its `model` group); refuses what is not built here."""
    model = cfg["model"] if isinstance(cfg.get("model", None), Mapping) else cfg
    image = model["modalities"]["image"]
    get = lambda group, name, default: group.get(name, default) if group.get(name) is not None else default  # noqa: E731
    # (setting, found, the only value implemented); fairseq defaults where a cfg omits a field.
    required = [
        ("model.ema_encoder_only", get(model, "ema_encoder_only", True), False),
        ("model.modalities.image.ema_local_encoder", get(image, "ema_local_encoder", False), True),
        ("model.shared_decoder", model.get("shared_decoder"), None),
        ("model.recon_loss", float(get(model, "recon_loss", 0.0)), 0.0),
        ("model.utterance_level", get(model, "utterance_level", False), False),
        ("model.layerdrop", float(get(model, "layerdrop", 0.0)), 0.0),
        ("model.min_target_var", float(get(model, "min_target_var", 0.1)), 0.0),
        ("model.min_pred_var", float(get(model, "min_pred_var", 0.01)), 0.0),
        ("model.modalities.image.transformer_decoder", get(image, "transformer_decoder", False), False),
        ("model.modalities.image.local_grad_mult", float(get(image, "local_grad_mult", 1.0)), 1.0),
        ("model.modalities.image.mask_prob_min", image.get("mask_prob_min"), None),
        ("model.modalities.image.keep_masked_pct", float(get(image, "keep_masked_pct", 0.0)), 0.0),
        ("model.modalities.image.mask_channel_prob", float(get(image, "mask_channel_prob", 0.0)), 0.0),
        ("model.modalities.image.add_masks", get(image, "add_masks", False), False),
        ("model.modalities.image.decoder", "present" if image.get("decoder") is not None else None, "present"),
    ]
    bad = [f"{name}={found!r} (supported: {want!r})" for name, found, want in required if found != want]
    if bad:
      raise ValueError("fairseq cfg: unsupported EAT pre-training settings: " + ", ".join(bad))
    encoder = eat.EATConfig.from_fairseq_cfg(model)
    return cls(
        encoder=encoder,
        decoder=eat_decoder.DecoderConfig.from_fairseq_cfg(image["decoder"]),
        targets=TargetConfig(
            average_top_k_layers=int(get(model, "average_top_k_layers", 12)),
            end_of_block_targets=bool(get(model, "end_of_block_targets", False)),
            instance_norm_target_layer=bool(get(model, "instance_norm_target_layer", False)),
            batch_norm_target_layer=bool(get(model, "batch_norm_target_layer", False)),
            layer_norm_target_layer=bool(get(model, "layer_norm_target_layer", False)),
            layer_norm_targets=bool(get(model, "layer_norm_targets", False)),
            instance_norm_targets=bool(get(model, "instance_norm_targets", False)),
            loss_beta=float(get(model, "loss_beta", 0.0)),
            loss_scale=None if model.get("loss_scale") is None else float(model["loss_scale"]),
            d2v_loss=float(get(model, "d2v_loss", 1.0)), cls_loss=float(get(model, "cls_loss", 0.0))),
        mask=masking.MaskConfig(
            mask_prob=float(get(image, "mask_prob", 0.7)), mask_length=int(get(image, "mask_length", 5)),
            mask_prob_adjust=float(get(image, "mask_prob_adjust", 0.0)),
            inverse_mask=bool(get(image, "inverse_mask", False)),
            mask_dropout=float(get(image, "mask_dropout", 0.0))),
        ema=ema_lib.EmaConfig(decay=float(get(model, "ema_decay", 0.999)),
                              end_decay=float(get(model, "ema_end_decay", 0.9999)),
                              anneal_end_step=int(get(model, "ema_anneal_end_step",
                                                      get(cfg.get("optimization", {}), "max_update", 0)))),
        clone_batch=int(get(model, "clone_batch", 16)),
        mask_noise_std=float(get(image, "mask_noise_std", 0.01)))


EAT_BASE_PRETRAINING = PretrainingConfig()
EAT_LARGE_PRETRAINING = PretrainingConfig(
    encoder=eat.EAT_LARGE, decoder=eat_decoder.DECODER_LARGE, targets=TargetConfig(average_top_k_layers=24),
    mask=masking.MaskConfig(mask_prob=0.75, mask_prob_adjust=0.1),
    ema=ema_lib.EmaConfig(anneal_end_step=150_000))
# The fixtures' size (2 x 64, 4 heads, decoder dim 64): for demos and tests.
EAT_TINY_PRETRAINING = PretrainingConfig(
    encoder=eat.EAT_TINY, decoder=dataclasses.replace(eat_decoder.DECODER_BASE, decoder_dim=64),
    targets=TargetConfig(average_top_k_layers=2))

PRESETS = {"base": EAT_BASE_PRETRAINING, "large": EAT_LARGE_PRETRAINING, "tiny": EAT_TINY_PRETRAINING}
