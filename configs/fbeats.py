"""FBEATs: full fine-tuning of BEATs (iter3+) with ArcFace; AdamW lr 1e-4, 40 epochs (report).

Pass the converted checkpoint: `--config.model.init_checkpoint=/abs/path/beats_iter3_plus`.
"""

from configs import common


def get_config():
  c = common.get_config()
  c.model.network = "beats"
  c.optim.learning_rate = 1e-4  # report
  c.train.epochs = 40  # report
  return c
