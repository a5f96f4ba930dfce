"""Held-out normal clips and classification accuracy: does fine-tuning learn its task, and does it generalise?

`split` sets aside, deterministically, a fraction of each class's fine-tuning clips that the model never trains
on (the pipeline still puts them in the kNN memory banks: they are normal training clips). `Evaluator` measures
a network's classification accuracy on clip sets in eval mode (no dropout, no mixup, no feature exchange): the
held-out clips and the training clips, so the two numbers differ only by whether the model saw the clips. The
batch accuracy the training step logs is neither: it is one batch of a few clips, in train mode.

Which clips are held out depends only on the clip's path below the dataset root (`<machine>/<split>/<file>`),
`seed` and `fraction`, not on the order of the records or on where the dataset lives.
"""

from __future__ import annotations

import collections
import hashlib
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from asd_jax.data import datasets
from asd_jax.data import labels as labels_lib
from asd_jax.data import records as rec
from asd_jax.embedding import extract
from asd_jax.models import networks
from asd_jax.runtime import microbatch as microbatch_lib
from asd_jax.runtime import sharding as shd

MIN_TRAIN_PER_CLASS = 2  # a class never gives up so many clips that fewer than this are left to train on


def _rank_key(record: rec.ClipRecord, seed: int) -> bytes:
  relative = "/".join(pathlib.PurePath(record.path).parts[-3:])  # <machine>/<split>/<file>
  return hashlib.sha256(f"{seed}\x1f{relative}".encode()).digest()


def split(records: Sequence[rec.ClipRecord], space: labels_lib.LabelSpace, fraction: float, *,
          seed: int = 0) -> tuple[list[rec.ClipRecord], list[rec.ClipRecord]]:
  """`(train, held_out)`, each in the order of `records`.

  From each class of `space` with n clips, `round(fraction * n)` clips are held out (at most
  n - MIN_TRAIN_PER_CLASS): those whose SHA-256 of `(seed, <machine>/<split>/<file>)` is smallest. With the
  demo's 3-clip classes and fraction 0.15 nothing is held out of them (round(0.45) = 0).
  """
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"held-out fraction must be in [0, 1), got {fraction}")
  by_class: dict[int, list[int]] = collections.defaultdict(list)
  for i, label in enumerate(space.labels(records)):
    by_class[label].append(i)
  held = set()
  for members in by_class.values():
    count = min(int(round(fraction * len(members))), max(0, len(members) - MIN_TRAIN_PER_CLASS))
    held.update(sorted(members, key=lambda i: _rank_key(records[i], seed))[:count])
  return ([r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held])


def subset(records: Sequence[rec.ClipRecord], max_clips: int, *, seed: int = 0) -> list[rec.ClipRecord]:
  """At most `max_clips` of `records` (0 = all), chosen by the same hash as `split`, in their order."""
  if not max_clips or len(records) <= max_clips:
    return list(records)
  keep = set(sorted(range(len(records)), key=lambda i: _rank_key(records[i], seed))[:max_clips])
  return [r for i, r in enumerate(records) if i in keep]


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
  """Fraction of rows whose highest score is their label: `scores [n, classes]`, `labels [n]` int."""
  if len(labels) == 0:
    return float("nan")
  return float(np.mean(np.argmax(scores, axis=-1) == labels))


class Evaluator:
  """Eval-mode class scores of named clip sets, with one compiled forward pass for every call.

  Args:
    config: the fine-tuning config (`data` says how clips are read, `embed` the batch size).
    network: a network with `class_scores` (`networks.Network`).
    clip_sets: `{name: records}`; empty sets are skipped.
    space: the label space the records' labels come from.
  """

  def __init__(self, config: ml_collections.ConfigDict, network: networks.Network,
               clip_sets: Mapping[str, Sequence[rec.ClipRecord]], space: labels_lib.LabelSpace):
    if network.class_scores is None:
      raise ValueError(f"network {network.name!r} has no class scores to evaluate")
    self.config = config
    self.clip_sets = {name: list(clips) for name, clips in clip_sets.items() if clips}
    self.labels = {name: np.asarray(space.labels(clips), np.int64) for name, clips in self.clip_sets.items()}
    self.mesh = shd.data_mesh()
    self.batch_size = config.embed.batch_size
    class_scores = network.class_scores

    def outputs(params, wav, all_layers):
      del all_layers
      return {"scores": class_scores(params["model"], params["extra"], wav)}

    self._forward = extract.make_forward(outputs, self.mesh, False, microbatch_lib.resolve(config.embed.microbatch))
    self._compiled = None

  def scores(self, params: Any, extra: Any) -> dict[str, np.ndarray]:
    """`{set name: [clips, classes]}` for plain (LoRA-merged) model `params` and the loss' `extra` state."""
    tree = shd.replicate({"model": params, "extra": extra}, self.mesh)
    if self._compiled is None:
      wav = shd.put_batch({"wav": np.zeros((shd.local_batch(self.batch_size), networks.clip_samples(self.config)),
                                           np.float32)}, self.mesh)["wav"]
      self._compiled = self._forward.lower(tree, wav).compile()
    out = {}
    for name, clips in self.clip_sets.items():
      dataset = datasets.inference_dataset(clips, None, batch_size=shd.local_batch(self.batch_size),
                                           config=datasets.wav_config(self.config.data))
      out[name] = extract.embed_batches(self._compiled, tree, iter(dataset), batch_size=self.batch_size,
                                        mesh=self.mesh, num_clips=len(clips), progress=False, prefetch=0)["scores"]
    return out

  def __call__(self, params: Any, extra: Any) -> dict[str, float]:
    """`{"<set name>_accuracy": fraction}` for every clip set."""
    return {f"{name}_accuracy": accuracy(s, self.labels[name]) for name, s in self.scores(params, extra).items()}


def chance_accuracy(labels: Sequence[int]) -> float:
  """The accuracy of always answering the most frequent class of `labels` (the floor a classifier must clear)."""
  if len(labels) == 0:
    return float("nan")
  return max(collections.Counter(int(x) for x in labels).values()) / len(labels)

