"""Defaults shared by every fine-tuning config; the model configs import this and change a few fields.

Where each value comes from. From the DCASE 2025 BEATs+EAT report: fine-tuning as machine-attribute
classification with an ArcFace head and AdamW, 40 epochs, the learning rates of each model (set in fbeats.py,
feat.py, lbeats.py, leat.py, dual_branch.py), LoRA rank 64 on the q, v and out projections with the head
trained. This project's own choices (the report does not give them), and why:
- Schedule: 5 % linear warm-up then cosine decay to 0 (standard for fine-tuning pretrained transformers;
  warm-up keeps the first AdamW steps from wrecking pretrained features while the head is still random).
- Weight decay 0.01 on matrices only, clipping at global norm 1.0, batch 32, dropout 0.1 on the pooled
  embedding: common, harmless fine-tuning defaults.
- ArcFace s=30, m=0.2: not in the report (see asd_jax.models.arcface for the reasoning).
- LoRA alpha = rank (scale alpha / r = 1): the update starts at the size AdamW makes it, and changing the
  rank does not change the effective learning rate of the factors. loralib's default (alpha = 1, scale 1/r)
  would shrink the update 64-fold at r=64; set `lora.alpha` to try it.
- Channels (`data.channels`, default "near": channel 0 of a multi-channel file, the signal of a mono one): the
  DCASE 2026 baseline's input (its channel 0 is the microphone near the machine), the channel MIMII's own
  baseline reads from its 8-microphone array, and the identity on the mono 2020-2025 releases;
  `--config.data.channels=cancel` removes from the near channel what the far one predicts (asd_jax.audio.channels
  lists the policies and why near is the default).
- Clip length (`data.clip_seconds` = 10, the report's): DCASE 2023-2025 clips are 6-18 s, the 2026 ones 10, 11 and
  12 s (dev; one length per machine type) and 6, 10 or 16 s (eval). Every config reads 10 s: longer clips keep
  their first 10 s, shorter ones are repeat-padded (a 6 s clip is 60 % recording, above the half-clip warning of
  asd_jax.audio.wav). Why not longer or whole clips: the encoders were pre-trained on 10 s inputs (EAT's 1024
  fbank frames are 10.24 s; BEATs saw AudioSet's 10 s clips), the report's numbers are for 10 s, and clips of one
  machine type share a length, so its training and test clips are cut alike. The cost is the unread end of an
  11-16 s clip; an anomaly confined to it is missed. Whole-clip windows (`asd_jax.audio.windows`, what `detect` does
  with long recordings: score every 10 s window, keep the maximum) are the alternative for scoring, not for
  fine-tuning; a config could switch to them once the embedding path aggregates windows.
- Pooling: the mean of the frame tokens for both encoders (`model.pool=""`, the encoders' default in
  `networks.ENCODERS`), so that BEATs (which has no CLS token) and EAT pool alike and multi-layer fusion pools
  every layer the same way. EAT's own utterance embedding is its CLS token: `--config.model.pool=cls` uses it.

`lora.extra_trainable` (regex over model parameter paths, default none): parameters trained besides LoRA's
factors and the head, through the same optax partition. The report's Table 1 lists LEAT with 62.91 M
trainable parameters, which LoRA r=64 on q, v, out plus the head cannot give (about 9.5 M on EAT-large:
`python -m asd_jax.train --config=configs/leat.py --workdir=/tmp/x --dry_run` prints the exact count); the
report does not say what else was trained. This field lets a user try candidates, e.g. `"norm"` (every
LayerNorm), `"mlp"` (the feed-forward blocks) or `"blocks_(2[0-3])/"` (the last four EAT-large blocks).

The returned config is locked: setting a field that does not exist (a typo in a derived config or on the
command line) fails with ml_collections' "did you mean" message. A derived config that needs new fields
adds them under `with c.unlocked():` (see configs/dual_branch.py).
"""

import ml_collections

from asd_jax.audio import channels
from asd_jax.finetuning import lora
from asd_jax.models import arcface


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.root = ""  # DCASE dataset root (dev and/or eval layout); see asd_jax.data.
  c.data.sample_rate = 16000
  c.data.clip_seconds = 10.0  # clips are cut/padded to this length (report: 10 s; DCASE 2026: see above)
  c.data.strict = False  # a wav at another sample rate: error (True) or resampled to sample_rate (False)
  c.data.channels = channels.DEFAULT  # project: "near" (see above); "far", "mean", "cancel" (asd_jax.audio.channels)
  # Fine-tune on the DCASE 2025 supplementary recordings too (clean machine and noise only, a class each per machine
  # type; asd_jax.data.labels). Project: True, every clip the dev set gives for training. On the synthetic sets,
  # whose noise-only clips are alike for every machine type, False scored higher (BENCHMARKS.md, issue 22).
  c.data.supplemental = True
  c.data.num_workers = 0  # Grain worker processes
  c.data.prefetch = 2  # batches loaded and put on the devices ahead of use by a background thread; 0 = off

  c.model = ml_collections.ConfigDict()
  c.model.network = "beats"  # asd_jax.models.networks.NETWORKS: "beats", "eat", "dual_branch" (configs/dual_branch.py)
  c.model.preset = "base"  # architecture when no init_checkpoint is given
  c.model.init_checkpoint = ""  # converted (or released) encoder checkpoint; architecture comes from it
  c.model.dtype = "auto"  # compute dtype: bfloat16 on GPU/TPU, float32 on CPU; params stay float32
  c.model.dropout_rate = 0.1  # project: on the pooled embedding, before the ArcFace head
  c.model.never_trained = ""  # regex of parameter paths that are fixed buffers, never updated
  c.model.pool = ""  # project: token pooling "mean" or "cls"; "" = the encoder's default (mean; see above)
  # EAT's fbank frames per clip: upstream pads/crops to 1024 (10.24 s), the report's 10 s clips; 0 = the clip's own
  # frames rounded up to a 16-frame patch (project option for short clips: 2 s padded to 1024 frames would be 80 %
  # padding patches, which then dominate the mean-pooled embedding).
  c.model.eat_target_length = 1024
  # Fast paths (same maths; effects measured in BENCHMARKS.md):
  c.model.attention = "auto"  # "fused" (jax.nn.dot_product_attention), "reference"; "auto" = fused on GPU only
  c.model.remat = False  # recompute each transformer block in the backward pass: less memory, slower step

  c.loss = ml_collections.ConfigDict()
  c.loss.scale = arcface.DEFAULT_SCALE  # project: 30 (the report gives no ArcFace scale)
  c.loss.margin = arcface.DEFAULT_MARGIN  # project: 0.2 (the report gives no ArcFace margin)
  # ArcFace centres per class (sub-centre ArcFace, asd_jax.models.arcface). Project: 1, plain ArcFace as the
  # report's single-encoder models; its Dual-Branch uses sub-clusters (SCAdaCos, configs/dual_branch.py).
  c.loss.num_subclusters = 1

  # Fine-tuning augmentation of the single-encoder classifiers (asd_jax.models.classifier.classification_loss).
  # Project: off; the report names none. EAT's own fine-tuning recipe uses mixup and SpecAugment-style masks.
  c.augment = ml_collections.ConfigDict()
  c.augment.mixup_prob = 0.0  # probability that a clip is mixed with its partner (waveforms, lam ~ U(0, 1))
  c.augment.time_masks = 0  # bands of fbank frames hidden per clip (asd_jax.audio.augment.mask_bands)
  c.augment.time_width = 0  # their widest, in frames (10 ms)
  c.augment.freq_masks = 0  # bands of mel bins hidden per clip
  c.augment.freq_width = 0  # their widest, in mel bins (of 128)

  c.lora = ml_collections.ConfigDict()
  c.lora.enabled = False
  c.lora.rank = 64  # report: r=64
  c.lora.alpha = 64.0  # project: alpha = rank, scale 1 (see above)
  c.lora.targets = lora.DEFAULT_TARGETS  # report: regex over parameter paths: q, v, out projections
  c.lora.extra_trainable = ""  # regex of further trained parameters with LoRA (see above); "" = none

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adamw"  # report: AdamW
  c.optim.learning_rate = 1e-4  # report: per model (FBEATs 1e-4; see the model configs)
  c.optim.warmup_steps = 0  # 0: use warmup_fraction
  c.optim.warmup_fraction = 0.05  # project
  c.optim.schedule = "cosine"  # project: "cosine", "linear" or "constant" after warm-up
  c.optim.end_lr_fraction = 0.0
  c.optim.weight_decay = 0.01  # project
  c.optim.grad_clip_norm = 1.0  # project
  c.optim.b1 = 0.9  # AdamW defaults
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8

  c.train = ml_collections.ConfigDict()
  c.train.epochs = 40  # report: 40 epochs
  c.train.batch_size = 32  # project: global batch, split over all devices
  c.train.log_every = 10
  c.train.checkpoint_every = 500  # steps; a checkpoint is also written at the end
  c.train.keep_checkpoints = 3
  c.train.distributed = False  # jax.distributed.initialize() for multi-host runs
  c.train.donate = True  # the step updates the train state in place (its input buffers are donated)
  # Held-out normal clips (asd_jax.finetuning.holdout): this fraction of each class's fine-tuning clips is never
  # trained on; the run logs its eval-mode accuracy on them (`heldout_accuracy`) beside the accuracy on the
  # training clips (`train_accuracy`). Project: 0, the report trains on every clip; the demo holds some out.
  c.train.holdout_fraction = 0.0
  c.train.eval_every = 0  # steps between those evaluations; 0 = after the last step only
  c.train.eval_clips = 512  # training clips in `train_accuracy` at most (a fixed subset; 0 = all)

  c.embed = ml_collections.ConfigDict()
  c.embed.batch_size = 16
  # Clips each device encodes at a time within a batch: -1 = auto (1 on CPU, where it is faster clip by clip,
  # the whole batch on GPU/TPU); 0 = the whole batch. Same embeddings either way.
  c.embed.microbatch = -1
  c.embed.autotune = False  # measure batch sizes on the devices first and use the fastest one that fits
  c.lock()
  return c
