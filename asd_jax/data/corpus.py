"""Unlabelled clips for pre-training: `pretraining_batches(data_config, *, batch_size, seed)`.

Minimal version (DCASE roots and folders of wavs, read through Grain and the project's wav loader); the
`corpora` branch replaces it with the full one (DCASE roots of any year, weighted mixtures, packed shards,
random crops) behind the same function. `data_config` fields:

- `sources`: list of `{"path": str, "kind": "dcase" | "folder" | "glob", "weight": float}`. "dcase": the
  `train/` and `supplemental/` clips of a DCASE Task 2 root (or machine folder); "folder": every `*.wav`
  below the folder; "glob": the files a recursive glob pattern matches. This version takes every clip once
  per epoch, so every weight must be 1.
- `packed`: folder of packed shards; "" reads the sources directly (the only mode this version has).
- `sample_rate`, `clip_seconds`: clips are resampled and cut / repeat-padded to this length from the start.
- `num_workers`: Grain worker processes (0 = in this process).
"""

from __future__ import annotations

import glob
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np
from absl import flags

from asd_jax.audio import wav as wavlib
from asd_jax.data import layout
from asd_jax.data import records as rec

KINDS = ("dcase", "folder", "glob")


def _field(source: Any, name: str, default: Any = None) -> Any:
  if isinstance(source, Mapping):
    return source.get(name, default)
  return getattr(source, name, default)


def source_paths(source: Any) -> list[str]:
  """The wav files of one source, sorted; FileNotFoundError naming the source if there are none."""
  path, kind = str(_field(source, "path", "")), _field(source, "kind", "folder")
  if kind not in KINDS:
    raise ValueError(f"data source {path!r}: kind {kind!r} is not one of {KINDS}")
  if kind == "glob":
    paths = sorted(p for p in glob.glob(os.path.expanduser(path), recursive=True) if os.path.isfile(p))
  elif not os.path.isdir(path):
    raise FileNotFoundError(f"data source {path!r} ({kind}) is not a directory")
  elif kind == "dcase":
    clips = layout.scan_dataset(path)
    paths = [r.path for r in clips if r.split in (rec.SPLIT_TRAIN, rec.SPLIT_SUPPLEMENTAL)]
  else:
    paths = sorted(str(p) for p in pathlib.Path(path).rglob("*.wav"))
  if not paths:
    raise FileNotFoundError(f"data source {path!r} ({kind}) holds no wav clips")
  return paths


def corpus_paths(sources: Sequence[Any]) -> list[str]:
  """Every clip of every source, in source order."""
  if not sources:
    raise ValueError("data.sources is empty: list at least one {'path', 'kind', 'weight'} source")
  paths = []
  for source in sources:
    weight = float(_field(source, "weight", 1.0))
    if weight != 1.0:
      raise NotImplementedError(f"data source {_field(source, 'path')!r}: weight {weight}; this minimal corpus "
                                "module reads every source once per epoch (weight 1)")
    paths += source_paths(source)
  return paths


class _LoadClip:
  """index -> {"wav": float32 [samples]}; picklable for worker processes."""

  def __init__(self, paths: Sequence[str], sample_rate: int, clip_seconds: float):
    self._paths = list(paths)
    self._sample_rate = sample_rate
    self._clip_seconds = clip_seconds

  def __call__(self, index: int) -> dict[str, np.ndarray]:
    return {"wav": wavlib.load_wav(self._paths[int(index)], sample_rate=self._sample_rate,
                                   duration_s=self._clip_seconds)}


def pretraining_batches(data_config: Any, *, batch_size: int, seed: int):
  """`(endless iterator of this process's batches {"wav": float32 [batch_size // process_count, samples]},
  number of clips)`; the iterator has `get_state()` / `set_state()`.

  Each process reads its own shard of the shuffled clip list (reshuffled every epoch).
  """
  import jax

  if _field(data_config, "packed", ""):
    raise NotImplementedError("data.packed: packed shards are read by the full corpus module (branch corpora)")
  processes = jax.process_count()
  if batch_size % processes:
    raise ValueError(f"batch size {batch_size} is not divisible by the {processes} processes")
  local = batch_size // processes
  paths = corpus_paths(_field(data_config, "sources", ()))
  shard = grain.MapDataset.range(len(paths))[jax.process_index()::processes]
  if len(shard) < local:
    raise ValueError(f"this process's shard has {len(shard)} clips, fewer than its batch of {local}")
  load = _LoadClip(paths, int(_field(data_config, "sample_rate", wavlib.SAMPLE_RATE)),
                   float(_field(data_config, "clip_seconds", wavlib.DURATION_S)))
  dataset = shard.shuffle(seed=seed).repeat(None).map(load).batch(local, drop_remainder=True).to_iter_dataset()
  workers = int(_field(data_config, "num_workers", 0))
  if workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (grain 0.2.18)
      flags.FLAGS.mark_as_parsed()
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return iter(dataset), len(paths)
