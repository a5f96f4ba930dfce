"""The training and embedding runs' view of the data layer: label space, clip lists and batch iterators.

Thin glue over `asd_jax.data` (dataset scan, label space, Grain pipeline), so the CLIs read as
"records -> labels -> batches" and the data layer's details stay in one place.
"""

from __future__ import annotations

import os

import ml_collections

from asd_jax.data import labels as labels_lib
from asd_jax.data import layout


def _root(config: ml_collections.ConfigDict) -> str:
  return os.path.abspath(config.data.root) if config.data.root else ""


def records(config: ml_collections.ConfigDict):
  """Every clip under `config.data.root`, sorted by path."""
  return layout.scan_dataset(_root(config))


def label_space(config: ml_collections.ConfigDict, *, required: bool = True) -> labels_lib.LabelSpace | None:
  """The label space of the training clips (None if the dataset is missing and not `required`)."""
  root = _root(config)
  if not root or not os.path.isdir(root):
    if required:
      raise FileNotFoundError(f"config.data.root={config.data.root!r} is not a directory; make the synthetic "
                              "data with `python -m asd_jax.data.synth --out DIR` or point it at a DCASE dataset")
    return None
  return labels_lib.LabelSpace.from_records(layout.train_records(records(config)))


def train_batches(config: ml_collections.ConfigDict, space: labels_lib.LabelSpace):
  """`(endless shuffled iterator of this process's batches, number of training clips)`."""
  from asd_jax.data import pipeline  # Lands with the data layer.

  train = layout.train_records(records(config))
  return pipeline.train_iterator(train, space, config), len(train)


def embedding_batches(config: ml_collections.ConfigDict):
  """`(clips, iterator of ordered batches with "valid" masks)` over every clip of the dataset."""
  from asd_jax.data import pipeline  # Lands with the data layer.

  clips = records(config)
  return clips, pipeline.ordered_batches(clips, config)
