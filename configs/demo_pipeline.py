"""Demo of the whole pipeline on the synthetic DCASE data: the report's six models at tiny size, on CPU.

  python -m asd_jax.data.synth --out work/synth_dcase --duration 2 --target_train 10 --test_clips 20
  python -m asd_jax.pipeline --config=configs/demo_pipeline.py --workdir=work/demo

(10 target-domain training clips per machine type, as in the real dev set: with the scaled default of 3, the
target normal clips lie farther from the few target clips of the memory bank than most anomalies do from
the source clips, and every model's AUC (target) falls below chance.)

The report's recipe is pre-train, then fine-tune, and so is the demo: the tiny EAT (2 layers, width 64) is first
pre-trained self-supervised on the demo corpus (configs/pretrain_demo.py: the dataset's train and supplemental
clips and the synthetic earlier years of `python -m asd_jax.data.synth_past`; no test clip), and that encoder
starts FEAT, LEAT and Dual-Branch's EAT branch. Every model is the report's recipe (configs/{fbeats,lbeats,feat,
leat,dual_branch}.py; Dual-Branch as in configs/demo_dual.py) at tiny size, 2 s clips and a few epochs; the
BEATs models start from a random tiny BEATs (there is no BEATs pre-training here). "Fusion" joins LBEATs' and
LEAT's final embeddings as in the full system.

Reference rows (Table 1, scored by the same SMOTE + cosine 1-NN, fused into no system):
  FEAT (random init)           FEAT fine-tuned the same way from a random-init EAT: what pre-training adds
  BEATs (frozen, random init)  the random tiny BEATs, no training
  EAT (frozen, pre-trained)    the pre-trained tiny EAT, no training: what fine-tuning adds
  EAT (frozen, random init)    the random tiny EAT, no training
  log-mel mean/std (not learned)  each clip's log-mel mean and std over time, a non-learned detector
The tables show the pipeline working end to end at a size that runs in minutes on a CPU; the real system's
strength comes from encoders pre-trained on millions of clips (BENCHMARKS.md compares the two honestly).
"""

from asd_jax.pipeline import specs
from configs import demo_dual, pipeline_base, pretrain_demo

SINGLE_ENCODER = {"fbeats": 3e-4, "feat": 1e-4, "lbeats": 3e-3, "leat": 3e-3}  # learning rates


def shrink(c, *, epochs: int, learning_rate: float):
  """A fine-tuning config cut down for the demo: 2 s clips, float32, LoRA rank 8, batch 8, few epochs."""
  c.data.clip_seconds = 2.0
  c.model.dtype = "float32"
  c.model.eat_target_length = 0  # 2 s -> 208 frames, as in pre-training (not padded to 1024: see configs/common.py)
  if c.lora.enabled:
    c.lora.rank = 8
    c.lora.alpha = 8.0
  c.optim.learning_rate = learning_rate
  c.train.epochs = epochs
  c.train.batch_size = 8
  c.train.log_every = 10
  c.train.checkpoint_every = 1000  # only the final checkpoint
  c.train.keep_checkpoints = 1
  c.embed.batch_size = 16
  return c


def shrink_frozen(c):
  """A reference model's config cut down for the demo: 2 s clips, float32."""
  c.data.clip_seconds = 2.0
  c.model.dtype = "float32"
  c.model.eat_target_length = 0
  c.embed.batch_size = 16
  return c


def get_config():
  c = pipeline_base.get_config("system1")
  c.data.root = "work/synth_dcase"
  # The demo's choice of starting weights: there is no pre-trained BEATs here, so every BEATs starts from random
  # weights (asked for by name); every EAT starts from the demo's pre-training (below).
  c.init.random_weights = "beats"
  # Pre-training first (report: EAT pre-trained on the task's and earlier years' data): the tiny EAT on the
  # demo corpus; its encoder initialises FEAT, LEAT, Dual-Branch's EAT branch and the frozen EAT row.
  pre = pretrain_demo.get_config()
  pre.data.sources.synth_2025.path = specs.DATA_ROOT  # the pipeline's dataset (train + supplemental clips)
  c.pretrain = pre
  c.model_keys = ",".join(pipeline_base.MODEL_KEYS + ("feat_random",) + pipeline_base.REFERENCE_KEYS
                          + ("frozen_eat_random",))
  c.models.frozen_eat.name = "EAT (frozen, pre-trained)"
  c.models.frozen_beats.name = "BEATs (frozen, random init)"
  for key, lr in {**SINGLE_ENCODER, "feat_random": SINGLE_ENCODER["feat"]}.items():
    t = c.models[key].fine_tune
    t.model.preset = "tiny"
    t.model.init_checkpoint = ""
    shrink(t, epochs=5, learning_rate=lr)
  dual = demo_dual.get_config()  # tiny BEATs + tiny EAT, 4 sub-clusters
  c.models.dual_branch.fine_tune = shrink(dual, epochs=3, learning_rate=dual.optim.learning_rate)
  for key in ("frozen_beats", "frozen_eat", "frozen_eat_random"):  # tiny encoders; EAT's from pre-training
    f = c.models[key].frozen
    f.model.preset = "tiny"
    f.model.init_checkpoint = ""
    shrink_frozen(f)
  shrink_frozen(c.models.log_mel.frozen)
  c.grid_step = 0.25  # 126 weight vectors for six models
  return specs.link_train_all(c)  # last: the fields set above follow --config.train_all too
