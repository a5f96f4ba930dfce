"""LBEATs: LoRA fine-tuning of BEATs (rank 64 on q, v, out of every block; head trainable); AdamW lr 2e-4 (report)."""

from configs import fbeats


def get_config():
  c = fbeats.get_config()
  c.lora.enabled = True
  c.lora.rank = 64  # report
  c.lora.alpha = 64.0  # project: scale 1 (configs/common.py)
  c.optim.learning_rate = 2e-4  # report
  return c
