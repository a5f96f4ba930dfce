"""The embeddings file of a model: `embeddings.npz` (float32 arrays, one row per clip) + `embeddings_records.json`.

`embeddings_records.json` is `{"source", "network", "batch_size", "records": [ClipRecord as a dict, ...]}`, the
clips in row order. The keys of `embeddings.npz`:

  single encoder (beats, eat), log-mel statistics:
    embedding         [clips, D]          the pooled final layer (the utterance embedding)
    layer_embeddings  [clips, L, D]       with all layers: the pooled output of every layer
  dual_branch:
    embedding         [clips, Db + De]    the fused branch features kNN scores: concat(BEATs, EAT) pooled final layers
    layers_beats      [clips, Lb, Db]     with all layers: every BEATs layer pooled (beats_pool)
    layers_eat        [clips, Le, De]     with all layers: every EAT layer pooled (eat_pool)

so `embedding == concat(layers_beats[:, -1], layers_eat[:, -1])`. Both files are written atomically (records
first, the arrays last), and non-finite values are refused before anything is written, naming the clips.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from collections.abc import Mapping, Sequence

import numpy as np

from asd_jax import atomic
from asd_jax.data import records as records_lib

ARRAYS = "embeddings.npz"


def records_path(path: str) -> str:
  """`embeddings_records.json` beside `embeddings.npz` (any `<name>.npz` -> `<name>_records.json`)."""
  return os.path.splitext(path)[0] + "_records.json"


def check_finite(outputs: Mapping[str, np.ndarray], clips: Sequence[records_lib.ClipRecord]) -> None:
  """Raises ValueError naming every clip (up to 10) whose outputs hold a NaN or an infinity."""
  bad = np.zeros(len(clips), bool)
  for value in outputs.values():
    bad |= ~np.isfinite(np.asarray(value).reshape(len(clips), -1)).all(axis=1)
  if bad.any():
    rows = np.flatnonzero(bad)
    names = "\n  ".join(clips[i].path for i in rows[:10])
    more = f"\n  ... and {len(rows) - 10} more" if len(rows) > 10 else ""
    raise ValueError(f"non-finite embeddings (NaN or inf) for {len(rows)} of {len(clips)} clips; nothing was "
                     f"written. Check these recordings and the model's checkpoint:\n  {names}{more}")


def write(path: str, outputs: Mapping[str, np.ndarray], clips: Sequence[records_lib.ClipRecord], *, source: str,
          network: str, batch_size: int) -> str:
  """Writes `outputs` (rows in the order of `clips`) to `path` and its records file; returns `path`."""
  check_finite(outputs, clips)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  atomic.write_json(records_path(path), {"source": source, "network": network, "batch_size": batch_size,
                                         "records": [dataclasses.asdict(c) for c in clips]}, indent=None)
  atomic.save_npz(path, **{k: np.asarray(v, np.float32) for k, v in outputs.items()})
  return path


def read(path: str, records: Sequence[records_lib.ClipRecord]) -> dict[str, np.ndarray]:
  """The arrays of `path`, rows reordered to `records` (matched by path); ValueError for missing clips."""
  with open(records_path(path)) as f:
    paths = [r["path"] for r in json.load(f)["records"]]
  row = {p: i for i, p in enumerate(paths)}
  missing = [r.path for r in records if r.path not in row]
  if missing:
    raise ValueError(f"{path} lacks {len(missing)} clips, e.g. {missing[:3]}")
  order = np.array([row[r.path] for r in records], np.int64)
  try:
    with np.load(path, allow_pickle=False) as data:
      out = {k: data[k] for k in data.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # truncated or damaged (a copy, a full disk)
    raise ValueError(f"{path}: not readable as .npz ({e}); re-embed (delete it and {records_path(path)})") from e
  if any(len(v) != len(paths) for v in out.values()):
    raise ValueError(f"{path} holds {len(next(iter(out.values())))} rows but {records_path(path)} lists "
                     f"{len(paths)} clips: re-embed (delete both files)")
  return {k: v[order] for k, v in out.items()}
