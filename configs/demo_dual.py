"""Demo of the dual-branch system: tiny BEATs + tiny EAT (random init), LoRA in both, featex + SCAdaCos, on the
synthetic DCASE data with 2 s clips; trains in a minute or two on a laptop CPU.

`python -m asd_jax.data.synth --out work/synth_dcase` makes the data.
"""

from configs import dual_branch


def get_config():
  c = dual_branch.get_config()
  c.data.root = "work/synth_dcase"
  c.data.clip_seconds = 2.0
  c.model.beats_preset = "tiny"
  c.model.eat_preset = "tiny"
  c.model.dtype = "float32"
  c.loss.num_subclusters = 4
  c.lora.rank = 8
  c.lora.alpha = 8.0
  c.optim.learning_rate = 1e-3
  c.train.epochs = 2
  c.train.batch_size = 8
  c.train.log_every = 5
  c.train.checkpoint_every = 20
  c.embed.batch_size = 8
  return c
