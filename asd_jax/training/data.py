"""The training runs' view of the data layer: label space and the shuffled batch iterator.

Thin glue over `asd_jax.data` (dataset scan, label space, Grain datasets), so fine-tuning reads as
"records -> labels -> batches" and the data layer's details stay in one place. A classifier trains on the
`train/` clips and the DCASE 2025 supplementary recordings (`supplemental/`; `records.is_fine_tuning_clip`):
each machine type's clean-machine and noise-only clips are classes of their own (`<machine>/clean`,
`<machine>/noise`, see `asd_jax.data.labels`), so the classifier also learns to tell the machine from its
factory noise.
"""

from __future__ import annotations

import os

import ml_collections

from asd_jax.data import datasets
from asd_jax.data import labels as labels_lib
from asd_jax.data import layout
from asd_jax.data import records as rec
from asd_jax.runtime import sharding as shd


def _root(config: ml_collections.ConfigDict) -> str:
  return os.path.abspath(config.data.root) if config.data.root else ""


def _check_root(config: ml_collections.ConfigDict) -> None:
  root = _root(config)
  if not root or not os.path.isdir(root):
    raise FileNotFoundError(f"dataset {root or '(none)'}: not a directory (config.data.root={config.data.root!r}); "
                            "make the synthetic data with `python -m asd_jax.data.synth --out DIR` or point it at a "
                            "DCASE dataset")


def records(config: ml_collections.ConfigDict, *, training: bool = False):
  """Every clip under `config.data.root`, sorted by path, after the scan's checks: every wav header readable,
  no clip too short for `config.data.clip_seconds`, every channel count readable with the channel policy
  (`datasets.wav_config(config.data).channels`) and (`training`) training clips in every machine folder."""
  _check_root(config)
  return layout.scan_dataset(_root(config), clip_seconds=config.data.clip_seconds, require_train=training,
                             channels=datasets.wav_config(config.data).channels)


def training_records(clips):
  """The clips a classifier trains on (`records.is_fine_tuning_clip`), in the order given."""
  return [r for r in clips if rec.is_fine_tuning_clip(r)]


def label_space(config: ml_collections.ConfigDict, *, required: bool = True,
                clips=None) -> labels_lib.LabelSpace | None:
  """The label space of the training clips, supplementary classes included (None if the dataset is missing
  and not `required`); `clips` are `records(config, training=True)` when the caller has them already."""
  root = _root(config)
  if not required and (not root or not os.path.isdir(root)):
    return None
  clips = records(config, training=True) if clips is None else clips
  return labels_lib.LabelSpace.from_records(training_records(clips))


def train_batches(config: ml_collections.ConfigDict, space: labels_lib.LabelSpace, clips=None):
  """`(endless shuffled iterator of this process's batches, number of training clips)` over the
  `training_records` (train + supplementary) of `clips` (default: `records(config, training=True)`)."""
  train = training_records(records(config, training=True) if clips is None else clips)
  dataset = datasets.training_dataset(train, space, batch_size=shd.local_batch(config.train.batch_size),
                                      seed=config.seed, config=datasets.wav_config(config.data),
                                      worker_count=config.data.num_workers)
  return iter(dataset), len(train)
