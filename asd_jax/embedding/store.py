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

so `embedding == concat(layers_beats[:, -1], layers_eat[:, -1])`, plus `records_sha256`, the SHA-256 of the
records file's content (`records_digest`): the two files are one pair, and `read` refuses a pair whose arrays
were written with other records (a write cut short by a full disk or a kill between the two files: the records
of a new checkpoint over the arrays of the old one). Both files are written atomically, the arrays first (a
failed arrays write leaves the old pair whole), and non-finite values are refused before anything is written,
naming the clips.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from collections.abc import Mapping, Sequence

import numpy as np

from asd_jax import atomic
from asd_jax.data import records as records_lib

ARRAYS = "embeddings.npz"
PAIR_KEY = "records_sha256"  # the key of embeddings.npz holding its records file's digest


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
  document = {"source": source, "network": network, "batch_size": batch_size,
              "records": [dataclasses.asdict(c) for c in clips]}
  atomic.save_npz(path, **{k: np.asarray(v, np.float32) for k, v in outputs.items()},
                  **{PAIR_KEY: np.array(records_digest(document))})
  atomic.write_json(records_path(path), document, indent=None)
  return path


def records_digest(document: Mapping[str, object]) -> str:
  """SHA-256 of a records file's content (its JSON with sorted keys): what ties `embeddings.npz` to it."""
  return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def _read_document(path: str) -> dict:
  file = records_path(path)
  try:
    with open(file) as f:
      return json.load(f)
  except ValueError as e:
    raise ValueError(f"{file}: not readable as JSON ({e}); re-embed (delete it and {path})") from e


def is_pair(path: str) -> bool:
  """Whether `path` and its records file exist and are one pair (cheap: one small member of the .npz)."""
  if not (os.path.isfile(path) and os.path.isfile(records_path(path))):
    return False
  try:
    with np.load(path, allow_pickle=False) as data:
      saved = str(data[PAIR_KEY]) if PAIR_KEY in data.files else None
    return saved == records_digest(_read_document(path))
  except (OSError, ValueError, EOFError, zipfile.BadZipFile):
    return False


def read(path: str, records: Sequence[records_lib.ClipRecord]) -> dict[str, np.ndarray]:
  """The arrays of `path`, rows reordered to `records` (matched by path); ValueError for missing clips, and
  for a pair of files that do not belong together (see the module docstring)."""
  document = _read_document(path)
  try:
    with np.load(path, allow_pickle=False) as data:
      out = {k: data[k] for k in data.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # truncated or damaged (a copy, a full disk)
    raise ValueError(f"{path}: not readable as .npz ({e}); re-embed (delete it and {records_path(path)})") from e
  saved = str(out.pop(PAIR_KEY)) if PAIR_KEY in out else None
  if saved != records_digest(document):
    why = "was written by an older asd_jax, without" if saved is None else "holds another"
    raise ValueError(f"{path} and {records_path(path)} are not one pair: the arrays file {why} digest of the "
                     "records they belong to (a write cut short, e.g. by a full disk); re-embed (delete both files)")
  paths = [r["path"] for r in document["records"]]
  row = {p: i for i, p in enumerate(paths)}
  missing = [r.path for r in records if r.path not in row]
  if missing:
    raise ValueError(f"{path} lacks {len(missing)} clips, e.g. {missing[:3]}")
  order = np.array([row[r.path] for r in records], np.int64)
  if any(len(v) != len(paths) for v in out.values()):
    raise ValueError(f"{path} holds {len(next(iter(out.values())))} rows but {records_path(path)} lists "
                     f"{len(paths)} clips: re-embed (delete both files)")
  return {k: v[order] for k, v in out.items()}
