"""FEAT: full fine-tuning of EAT (base) with ArcFace; AdamW lr 1e-5, 40 epochs.

Pass the converted checkpoint: `--config.model.init_checkpoint=/abs/path/eat_base`.
"""

from configs import common


def get_config():
  c = common.get_config()
  c.model.encoder = "eat"
  c.model.never_trained = r"^encoder/positions$"  # EAT's sin-cos position table is a fixed buffer upstream
  c.optim.learning_rate = 1e-5
  c.train.epochs = 40
  return c
