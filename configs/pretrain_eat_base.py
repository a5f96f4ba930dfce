"""EAT-base pre-training with upstream's hyper-parameters (cwx-worst-one/EAT `config/pretraining_AS2M.yaml`).

  python -m asd_jax.pretrain --config=configs/pretrain_eat_base.py:dcase:/data/dcase2025_dev,folder:/data/as2m \
      --workdir=DIR [--config.model.init_checkpoint=EAT-base_epoch30_pretrain.pt]

The text after `.py:` lists the data sources, `kind:path` separated by commas (kinds: dcase, folder, glob; see
`asd_jax.data.corpus`; they are named `<kind><i>`), or is `report`: the sources of configs/pretrain_corpus.py
(DCASE 2020-2024 and AudioSet; give their paths as `--config.data.sources.dcase2020.path=...`), or set
`config.data.sources` in a derived config. `--config.data.packed=DIR` reads a corpus packed by
`python -m asd_jax.data.pack`. Every value below is upstream's
(the yaml, or its code defaults where the yaml is silent), except where a comment says otherwise:
- batch 48 clips per update = 12 per GPU x 4 GPUs (`dataset.batch_size`, `distributed_training`);
  400,000 updates, cosine schedule after 53,333 warm-up updates, peak lr 5e-4, Adam (0.9, 0.95), weight
  decay 0.05 (not on biases and norms), clip norm 4 (`optimization`, `optimizer`);
- masking, targets, EMA, decoder, clone_batch 16, mask tokens N(0, 0.01^2), cls_loss 1: the `model` group;
- clips: 10 s (1024 fbank frames, upstream's `target_length`), AudioSet's global fbank normalisation.
Project choices: float32 master weights with bfloat16 compute on accelerators (upstream trains fp16 with loss
scaling, which bfloat16 does not need); Adam's eps is added to the bias-corrected root (optax) rather than
to the raw root (fairseq), a difference of eps * sqrt(1 - 0.95^t) that only matters for gradients near 1e-8.
"""

import ml_collections

from asd_jax.data import corpus
from configs import pretrain_corpus


def parse_sources(spec: str) -> ml_collections.ConfigDict:
  """`"kind:path,kind:path"` -> `{"<kind><i>": corpus.source(path, kind), ...}` (numbered in order); "" -> {}."""
  sources = ml_collections.ConfigDict()
  for i, entry in enumerate(filter(None, (e.strip() for e in spec.split(",")))):
    kind, sep, path = entry.partition(":")
    if not sep or not path:
      raise ValueError(f"data source {entry!r}: expected kind:path (kind = dcase, folder or glob)")
    sources[f"{kind}{i}"] = corpus.source(path, kind)
  return sources


def get_config(sources: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 1  # common.seed

  # The corpus (asd_jax.data.corpus.default_config(): weights, packed shards, crops, padding): 10 s clips, short
  # ones zero-padded as upstream pads its fbank (pad="eat"), longer ones randomly cropped (project choice).
  c.data = corpus.default_config()
  if sources == "report":  # the report's corpus, configs/pretrain_corpus.py: set its paths on the command line
    c.data.sources = pretrain_corpus.get_config().sources
  else:
    c.data.sources = parse_sources(sources)
  c.data.clip_seconds = 10.0
  c.data.num_workers = 10  # dataset.num_workers
  c.data.prefetch = 2  # batches put on the devices ahead of use (project choice)

  c.model = ml_collections.ConfigDict()
  c.model.preset = "base"  # encoder size when no init_checkpoint: base, large or tiny
  c.model.init_checkpoint = ""  # continue from: a fairseq pretraining .pt (student, _ema, decoder) or any EAT form
  c.model.target_length = 1024  # fbank frames per clip (pad/crop); 0 = the clip's frames rounded up to 16
  c.model.dtype = "auto"  # bfloat16 compute on GPU/TPU, float32 on CPU; params, targets and losses float32
  c.model.attention = "auto"  # fused (cuDNN flash) attention on GPU, reference elsewhere; same maths
  c.model.remat = False  # recompute blocks in the backward pass (less memory, slower)

  c.decoder = ml_collections.ConfigDict()
  c.decoder.decoder_dim = 768
  c.decoder.decoder_groups = 16
  c.decoder.decoder_kernel = 3
  c.decoder.decoder_layers = 6
  c.decoder.decoder_residual = True

  c.mask = ml_collections.ConfigDict()
  c.mask.mask_prob = 0.8
  c.mask.mask_length = 5
  c.mask.mask_prob_adjust = 0.07
  c.mask.inverse_mask = True
  c.mask.mask_dropout = 0.0

  c.targets = ml_collections.ConfigDict()
  c.targets.average_top_k_layers = 12
  c.targets.end_of_block_targets = False
  c.targets.instance_norm_target_layer = True
  c.targets.batch_norm_target_layer = False
  c.targets.layer_norm_target_layer = False
  c.targets.layer_norm_targets = True
  c.targets.instance_norm_targets = False
  c.targets.loss_beta = 0.0
  c.targets.loss_scale = ml_collections.config_dict.placeholder(float)  # None = 1 / sqrt(dim)
  c.targets.d2v_loss = 1.0
  c.targets.cls_loss = 1.0

  c.ema = ml_collections.ConfigDict()
  c.ema.decay = 0.9998
  c.ema.end_decay = 0.99999
  c.ema.anneal_end_step = 100_000

  c.pretrain = ml_collections.ConfigDict()
  c.pretrain.clone_batch = 16
  c.pretrain.mask_noise_std = 0.01
  # Upstream ran 12 clips per GPU; each GPU scales its CLS loss by its own masked-patch count while the sum is
  # divided by the global one, so the CLS term weighs 1 / (number of GPUs) of a one-process run's. Keeping
  # 12 reproduces that weighting for any device count here (0: the whole batch counts as one replica).
  c.pretrain.replica_batch = 12

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adamw"  # fairseq's Adam applies decoupled weight decay, i.e. AdamW
  c.optim.learning_rate = 5e-4
  c.optim.warmup_steps = 53_333
  c.optim.warmup_fraction = 0.0
  c.optim.schedule = "cosine"
  c.optim.end_lr_fraction = 0.0  # fairseq cosine min_lr 0
  c.optim.weight_decay = 0.05
  c.optim.grad_clip_norm = 4.0
  c.optim.b1 = 0.9
  c.optim.b2 = 0.95
  c.optim.eps = 1e-8

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 48  # global clips per update (each seen as clone_batch masked views)
  c.train.num_steps = 400_000
  c.train.log_every = 200  # common.log_interval
  c.train.checkpoint_every = 10_000  # checkpoint.save_interval_updates
  c.train.keep_checkpoints = 2
  c.train.distributed = False  # jax.distributed.initialize() for multi-host runs (TPU pods)
  c.train.donate = True
  c.lock()
  return c
