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
updates, and the two settings below, both scaled to a 200-update run and picked with the held-out probe
(`benchmarks/pretrain_probe.py`, `asd_jax.pretraining.probe`: cosine 1-NN and linear accuracy of machine type
and attributes on the demo set's normal test clips, final layer; differences in points are paired with the
run's own initial encoder; issue 22 and BENCHMARKS.md "EAT pre-training at demo scale"):
- EMA teacher decay 0.95, constant: a teacher time constant of 1 / (1 - 0.95) = 20 updates, a tenth of the run
  (upstream's 0.9998 -> 0.99999 over 100k of 400k updates is 5,000 updates at the start). Upstream's schedule
  over 200 updates moved the teacher by 0.4 % (relative change of its parameters; it keeps 97.9 % of its
  start), so the targets stayed the random network's, and the exported student was worse than its init
  (machine 1-NN -5.2 +- 6.0, 3 seeds).
- peak learning rate 1e-4 (upstream 5e-4): at 1e-3 (this demo before) a teacher that moves collapses or
  degrades (0.95 constant: 2 of 3 seeds collapsed, attribute linear 65 % vs 81 % at init; 0.9 -> 0.99: 30 %);
  at 3e-4 or 5e-4 with 0.99 -> 0.999 the student gained less (machine 1-NN +1.4 to +2.9, 2 seeds).
  With both (seeds 1-3): teacher and student move 10.3-10.8 %, loss_regression falls from 19-24 to 9-10,
  target_var stays 0.98-0.99; the student gains machine 1-NN +4.2 +- 3.0, attribute linear +1.0 +- 1.4
  (machine linear +0.5 +- 2.3, attribute 1-NN +0.2 +- 2.2), and over the pipeline's "EAT (frozen, random
  init)" +4.3 +- 3.8 / +0.4 +- 4.1 / +5.8 +- 3.6 / +2.7 +- 1.4 (machine 1-NN / linear, attribute 1-NN / linear).
  It does not help anomaly scores: the frozen pre-trained row scores 56.3 +- 0.3 % against 60.3 +- 1.2 % for
  random init (AUC target 51.4 vs 58.7 %); what 200 updates learn first is the domain's background noise.
Same step cost as before: 87 vs 91 CPU-s (user + sys), measured back to back under load; on 2 idle cores
the same 200 updates took 98 s before (not re-measured idle: the machine was never idle).
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
  c.ema.decay = 0.95  # demo choice (see above); upstream anneals 0.9998 -> 0.99999
  c.ema.end_decay = 0.95
  c.ema.anneal_end_step = 200
  c.optim.learning_rate = 1e-4  # demo choice (see above); upstream 5e-4
  c.optim.warmup_steps = 10
  c.train.batch_size = 8
  c.pretrain.clone_batch = 8
  c.pretrain.replica_batch = 0  # one replica: the CLS loss as upstream on one GPU
  c.train.num_steps = 200
  c.train.log_every = 10
  c.train.checkpoint_every = 100
  return c
