"""FEAT: full fine-tuning of EAT-large with ArcFace; AdamW lr 1e-5, 40 epochs (report).

The report's EAT is EAT-large (321.17 M parameters, the original EAT-large hyperparameters), so EAT-large is
the default here and its layout the random-init preset. Pass the converted checkpoint:
`--config.model.init_checkpoint=/abs/path/eat_large` (the architecture comes from the checkpoint; EAT-base
works the same way, or `--config.model.preset=base` without one).
"""

from configs import common


def get_config():
  c = common.get_config()
  c.model.network = "eat"
  c.model.preset = "large"  # report: EAT-large
  c.model.never_trained = r"^encoder/positions$"  # EAT's sin-cos position table is a fixed buffer upstream
  c.optim.learning_rate = 1e-5  # report
  c.train.epochs = 40  # report
  return c
