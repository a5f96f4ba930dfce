"""Demo of the whole pipeline on synthetic DCASE 2026 data: two-channel near/far clips, a channel policy for every
model, the demo's models and reference rows at tiny size, on CPU.

  python -m asd_jax.data.synth --year 2026 --out work/synth_2026 --duration 2 --target_train 10 --test_clips 20
  python -m asd_jax.pipeline --config=configs/demo_2026.py --workdir=work/demo_2026 \\
      --config.data.root=work/synth_2026 --config.data.channels=cancel

`configs/demo_pipeline.py` with three changes:
  * the data: `asd_jax.data.synth_2026`'s seven 2026 dev machine types, two channels (0 near the machine, 1 far),
    clips of 2 s (the MIMII-derived types), 2.2 s (ToyCar) and 2.4 s (ToyCarEmu), read as 2 s clips like the
    demo's (the first 2 s; configs/common.py says why the configs cut clips to one length);
  * the channel policy, `data.channels`: every model's, and the pre-training corpus's (`<data.root>`), at once;
    "near" here (the official 2026 baseline's input), `--config.data.channels=cancel` removes from the near
    channel what the far one predicts (asd_jax.audio.channels; `far`, `mean` too);
  * pre-training reads the 2026 set's training clips only (2026 has no supplemental clips, and the demo's
    synthetic earlier years are mono 2020/2023 sets of other machines): the same tiny EAT and 200 updates
    (configs/pretrain_demo.py), about a minute and a half on 2 CPU cores.
Models, learning rates, epochs and the reference rows (FEAT from random init, frozen random BEATs, frozen
pre-trained and random EAT, the non-learned log-mel mean/std) are the demo's. BENCHMARKS.md ("Channel policies")
compares the policies on this data with seeds and spread.
"""

from asd_jax.audio import channels
from asd_jax.data import corpus
from asd_jax.pipeline import specs
from configs import demo_pipeline

CLIP_SECONDS = 2.0  # the demo's; the synthetic 2026 clips are 2, 2.2 and 2.4 s


def get_config():
  c = demo_pipeline.get_config()
  c.data.root = "work/synth_2026"
  c.data.channels = channels.NEAR  # the official 2026 baseline's input; overridden on the command line
  c.pretrain.data.sources = {"dataset": corpus.source(specs.DATA_ROOT, "dcase")}
  c.pretrain.data.clip_seconds = CLIP_SECONDS
  for key in c.model_keys.split(","):
    entry = c.models[key]
    for model in (entry.fine_tune, entry.frozen):
      if model is not None:
        model.data.clip_seconds = CLIP_SECONDS
  return c
