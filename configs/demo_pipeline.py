"""Demo of the whole pipeline on the synthetic DCASE data: the report's six models at tiny size, on CPU.

  python -m asd_jax.data.synth --out work/synth_dcase --duration 2 --target_train 10
  python -m asd_jax.pipeline --config=configs/demo_pipeline.py --workdir=work/demo

(10 target-domain training clips per machine type, as in the real dev set: with the scaled default of 3, the
target normal clips lie farther from the few target clips of the memory bank than most anomalies do from
the source clips, and every model's AUC (target) falls below chance.)

Every model is the report's recipe (configs/{fbeats,lbeats,feat,leat,dual_branch}.py; Dual-Branch as in
configs/demo_dual.py) with tiny randomly initialised encoders (2 layers, width 64; no pretrained weights),
2 s clips and a few epochs; "Fusion" joins LBEATs' and LEAT's final embeddings as in the full system. The
reference rows are the same tiny encoders at random init, untrained ("BEATs (frozen)", "EAT (frozen)": without
converted weights they show what a few epochs of fine-tuning add to a random network) and the non-learned
log-mel statistics. The tables show the pipeline working end to end; they say little about the real system,
whose strength comes from the pretrained encoders.
"""

from asd_jax.pipeline import specs
from configs import demo_dual, pipeline_base, pretrain_demo

SINGLE_ENCODER = {"fbeats": 3e-4, "feat": 1e-4, "lbeats": 3e-3, "leat": 3e-3}  # learning rates


def shrink(c, *, epochs: int, learning_rate: float):
  """A fine-tuning config cut down for the demo: 2 s clips, float32, LoRA rank 8, batch 8, few epochs."""
  c.data.clip_seconds = 2.0
  c.model.dtype = "float32"
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
  c.embed.batch_size = 16
  return c


def get_config():
  c = pipeline_base.get_config("system1")
  c.data.root = "work/synth_dcase"
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
    t = c.models[key].train
    t.model.preset = "tiny"
    t.model.init_checkpoint = ""
    shrink(t, epochs=5, learning_rate=lr)
  dual = demo_dual.get_config()  # tiny BEATs + tiny EAT, 4 sub-clusters
  c.models.dual_branch.train = shrink(dual, epochs=3, learning_rate=dual.optim.learning_rate)
  for key in ("frozen_beats", "frozen_eat", "frozen_eat_random"):  # tiny encoders; EAT's from pre-training
    f = c.models[key].frozen
    f.model.preset = "tiny"
    f.model.init_checkpoint = ""
    shrink_frozen(f)
  shrink_frozen(c.models.log_mel.frozen)
  c.grid_step = 0.25  # 126 weight vectors for six models
  return c
