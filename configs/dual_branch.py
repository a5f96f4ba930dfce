"""Dual-Branch: BEATs + EAT-large side by side, LoRA r=64 on q, v, out in both encoders, featex + SCAdaCos loss.

AdamW lr 2e-4, 40 epochs; schedule, weight decay and clipping are common.py's (the report fixes only the rate
and the epochs). Pass both converted checkpoints:

  python -m asd_jax.train --config=configs/dual_branch.py --workdir=DIR \\
      --config.model.beats_checkpoint=/abs/path/beats_iter3_plus --config.model.eat_checkpoint=/abs/path/eat_large

The fields of common.py that only a single encoder has (`model.preset`, `model.init_checkpoint`, `model.pool`,
`model.dropout_rate`, ArcFace's `loss.scale`/`loss.margin`, the classifier's `augment`) are removed, so setting
one is an error. Each branch has `<branch>_preset` (architecture without a checkpoint), `<branch>_checkpoint`
and `<branch>_pool`. Fields under `loss` map one to one onto `asd_jax.models.dual_branch.DualBranchLossConfig`
(`num_classes` is the training label space's).
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.get_config()
  c.model.network = "dual_branch"
  with c.unlocked():  # new fields; the config is locked again afterwards
    for single_encoder_field in ("preset", "init_checkpoint", "pool", "dropout_rate"):
      del c.model[single_encoder_field]
    del c.augment  # the dual-branch loss has its own mixup (loss.mixup_prob)
    c.model.beats_preset = "base"  # BEATs iter3+ layout
    c.model.beats_checkpoint = ""  # converted (or released .pt) BEATs; sets the architecture
    c.model.beats_pool = "mean"
    c.model.eat_preset = "large"  # report: EAT-large (EAT-base works too)
    c.model.eat_checkpoint = ""  # converted (or released) EAT; sets the architecture
    c.model.eat_pool = "mean"
    c.model.never_trained = r"^encoder/eat/positions$"  # EAT's fixed sin-cos table (matters without LoRA only)

    c.loss = ml_collections.ConfigDict()
    c.loss.num_subclusters = 16  # K sub-clusters per class in both SCAdaCos heads
    c.loss.mixup_prob = 0.5
    c.loss.featex_prob = 0.5  # probability that a clip's EAT embedding is exchanged with its partner's
    c.loss.main_weight = 1.0  # C-class head, fixed centres
    c.loss.featex_weight = 1.0  # 3C-class featex head, trained centres
    c.loss.min_scale = 1.0  # bounds of the adaptive SCAdaCos scales
    c.loss.max_scale = 64.0

  c.lora.enabled = True
  c.lora.rank = 64
  c.lora.alpha = 64.0
  # The default targets, `(^|/)(q_proj|v_proj|out_proj)/kernel$`, match both encoders:
  # encoder/beats/encoder/layers_<i>/self_attn/* and encoder/eat/blocks_<i>/attn/*.

  c.optim.learning_rate = 2e-4
  c.train.epochs = 40
  return c
