"""LEAT: LoRA fine-tuning of EAT (rank 64 on q, v, out of every block; head trainable); AdamW lr 2e-4."""

from configs import feat


def get_config():
  c = feat.get_config()
  c.lora.enabled = True
  c.lora.rank = 64
  c.lora.alpha = 64.0
  c.optim.learning_rate = 2e-4
  return c
