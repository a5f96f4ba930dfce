"""Demo of the whole pipeline on the synthetic DCASE data: the report's models at tiny size, on CPU.

  python -m asd_jax.data.synth --out work/synth_dcase
  python -m asd_jax.pipeline --config=configs/demo_pipeline.py --workdir=work/demo_pipeline

Every model is the report's recipe (configs/{fbeats,lbeats,feat,leat}.py) with a tiny randomly initialised
encoder (2 layers, width 64; no pretrained weights), 2 s clips and a few epochs; "Fusion" joins LBEATs' and
LEAT's final embeddings as in the full system. The tables show the pipeline working end to end; they say
nothing about the real system, whose strength comes from the pretrained encoders.
"""

from configs import pipeline_base


def tiny(train_config, *, epochs: int, learning_rate: float):
  """A fine-tuning config shrunk for the demo: tiny random encoder, 2 s clips, batch 8, few epochs."""
  c = train_config
  c.data.clip_seconds = 2.0
  c.model.preset = "tiny"
  c.model.init_checkpoint = ""
  c.model.dtype = "float32"
  if c.lora.enabled:
    c.lora.rank = 8
    c.lora.alpha = 8.0
  c.optim.learning_rate = learning_rate
  c.train.epochs = epochs
  c.train.batch_size = 8
  c.train.log_every = 10
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 1
  c.embed.batch_size = 16
  return c


def get_config():
  c = pipeline_base.get_config("system1")
  c.data.root = "work/synth_dcase"
  c.model_keys = "fbeats,lbeats,feat,leat,fusion"  # Dual-Branch joins once train.train supports it
  for key, lr in (("fbeats", 3e-4), ("feat", 3e-4), ("lbeats", 3e-3), ("leat", 3e-3)):
    c.models[key].train = tiny(c.models[key].train, epochs=5, learning_rate=lr)
  c.grid_step = 0.25
  return c
