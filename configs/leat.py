"""LEAT: LoRA fine-tuning of EAT-large (rank 64 on q, v, out of every block; head trainable); AdamW lr 2e-4.

All three from the report. Its Table 1 lists 62.91 M trainable parameters for LEAT, more than LoRA r=64 on q, v,
out plus the head gives on EAT-large (`--dry_run` prints the exact count); `lora.extra_trainable` (see
configs/common.py) trains further parameters through the same optax partition for whoever wants to try what
the report may have trained.
"""

from configs import feat


def get_config():
  c = feat.get_config()
  c.lora.enabled = True
  c.lora.rank = 64  # report
  c.lora.alpha = 64.0  # project: scale 1 (configs/common.py)
  c.optim.learning_rate = 2e-4  # report
  return c
