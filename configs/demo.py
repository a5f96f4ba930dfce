"""Demo: LoRA fine-tuning of the tiny BEATs on the synthetic DCASE data, random init, a few epochs on CPU.

`python -m asd_jax.data.synth --out work/synth_dcase` makes the data. Pick the encoder with
`--config.model.network=eat` (tiny EAT) and full fine-tuning with `--config.lora.enabled=False`.
"""

from configs import common


def get_config():
  c = common.get_config()
  c.data.root = "work/synth_dcase"
  c.data.clip_seconds = 2.0
  c.model.network = "beats"
  c.model.preset = "tiny"
  c.model.dtype = "float32"
  c.lora.enabled = True
  c.lora.rank = 8
  c.lora.alpha = 8.0
  c.optim.learning_rate = 1e-3
  c.train.epochs = 3
  c.train.batch_size = 8
  c.train.log_every = 5
  c.train.checkpoint_every = 20
  c.embed.batch_size = 8
  return c
