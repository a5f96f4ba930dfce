"""The demo's unlabelled pre-training corpus: the synthetic 2025 set's training and supplementary clips, plus the
synthetic "earlier years" (other machine types in the 2020 and 2023 layouts), 2 s clips.

  python -m asd_jax.data.synth --out work/synth_dcase --duration 2 --target_train 10 --test_clips 20
  python -m asd_jax.data.synth_past --out work/synth_past

Test clips of both trees are left out (the 2025 one is the demo's evaluation set); weights 1: every clip
equally often (project choice, as in configs/pretrain_corpus.py).
"""

from asd_jax.data import corpus


def get_config():
  c = corpus.default_config()
  c.sources.synth_2025 = corpus.source("work/synth_dcase", "dcase")
  c.sources.synth_past = corpus.source("work/synth_past", "dcase")
  c.clip_seconds = 2.0
  c.lock()
  return c
