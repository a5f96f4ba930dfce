"""Dual-branch BEATs + EAT system: LoRA (r=64 on q, v, out) in both encoders, featex + SCAdaCos, 40 epochs.

Fields under `loss` map one to one onto `asd_jax.models.dual_branch.DualBranchLossConfig` (`num_classes` is
set from the training label space at run time); `optim` follows `asd_jax.training.optimizer`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.system = "dual_branch"

  config.model = ml_collections.ConfigDict()
  config.model.beats = "base"  # BEATsConfig preset; pretrained weights from --config.model.beats_checkpoint
  config.model.eat = "base"  # EATConfig preset
  config.model.beats_checkpoint = ""
  config.model.eat_checkpoint = ""
  config.model.beats_pool = "mean"
  config.model.eat_pool = "mean"
  config.model.dtype = "float32"

  config.lora = ml_collections.ConfigDict()
  config.lora.rank = 64
  config.lora.alpha = 64.0
  config.lora.targets = r"(^|/)(q_proj|v_proj|out_proj)/kernel$"
  config.lora.trainable_modules = r"^head/"  # the featex head's sub-cluster centres

  config.loss = ml_collections.ConfigDict()
  config.loss.num_subclusters = 16
  config.loss.mixup_prob = 0.5
  config.loss.featex_prob = 0.5
  config.loss.main_weight = 1.0
  config.loss.featex_weight = 1.0
  config.loss.min_scale = 1.0
  config.loss.max_scale = 64.0

  config.optim = ml_collections.ConfigDict()
  config.optim.name = "adamw"
  config.optim.learning_rate = 2e-4
  config.optim.schedule = "constant"
  config.optim.weight_decay = 0.0

  config.num_epochs = 40
  config.batch_size = 32
  config.seed = 0
  return config
