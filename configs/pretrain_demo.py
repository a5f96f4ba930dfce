"""Demo: pre-train the tiny EAT (2 x 64) on the demo's unlabelled corpus, 2 s clips, a minute or two on 2 CPU cores.

  python -m asd_jax.data.synth --out work/synth_dcase --duration 2
  python -m asd_jax.data.synth_past --out work/synth_past
  python -m asd_jax.pretrain --config=configs/pretrain_demo.py --workdir=work/pretrain_demo
  python -m asd_jax.train --config=configs/feat.py --workdir=work/feat_demo --config.data.root=work/synth_dcase \
      --config.model.init_checkpoint=work/pretrain_demo/encoder --config.data.clip_seconds=2 ...

The corpus is configs/demo_corpus.py (the synthetic 2025 set's train and supplemental clips and the synthetic
earlier years, test clips left out); `--config=configs/pretrain_demo.py:dcase:/other/root` reads other data.
Everything is upstream's base recipe except (project choices, to fit a 10-minute demo on 2 CPU cores): the
sizes (tiny encoder, decoder dim 64), 2 s clips (208 frames: 13 x 8 patches), 8 clips per update seen as 8
masked views each (upstream: 16), 200 updates (the demo corpus's ~590 clips about 2.7 times) with 10 warm-up
updates, a higher peak learning rate (1e-3), and upstream's EMA decay annealed over the 200 updates. With so
few updates the teacher moves only ~4 % of the way to the student; a faster teacher (decay 0.99 -> 0.999)
measured no better (frozen EAT on a larger synthetic test set: 54.1 vs 55.2 %, BENCHMARKS.md). About two
minutes on 2 idle CPU cores.
"""

from configs import demo_corpus
from configs import pretrain_eat_base


def get_config(sources: str = ""):
  c = pretrain_eat_base.get_config(sources)
  if not sources:
    c.data.sources = demo_corpus.get_config().sources
  c.data.clip_seconds = 2.0
  c.data.num_workers = 0
  c.model.preset = "tiny"
  c.model.target_length = 0  # 2 s -> 198 frames -> 208
  c.model.dtype = "float32"
  c.decoder.decoder_dim = 64
  c.targets.average_top_k_layers = 2
  c.ema.anneal_end_step = 200
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 10
  c.train.batch_size = 8
  c.pretrain.clone_batch = 8
  c.pretrain.replica_batch = 0  # one replica: the CLS loss as upstream on one GPU
  c.train.num_steps = 200
  c.train.log_every = 10
  c.train.checkpoint_every = 100
  return c
