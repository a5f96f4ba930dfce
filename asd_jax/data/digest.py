"""Content digests of a list of clips, cheap to recompute on an unchanged dataset.

`digest(records, root, cache)` is a SHA-256 over every clip's path (relative to `root`) and the SHA-256 of its
bytes, so it changes when any clip is added, removed, renamed or changed in content, and only then (DCASE clips
all have the same size, so size alone misses a replaced recording). Hashing every byte of a dev set on each
run would cost seconds to minutes, so `ContentHashes` keeps each file's hash in a JSON cache with the file's
stat signature (size, mtime, ctime, inode) and rehashes only files whose signature changed. The ctime is the
point: the kernel sets it on every write or metadata change and no tool can set it back (`cp -p`, `touch -d`
or `rsync -t` restore the mtime, not the ctime), so a replaced file is always rehashed. The cost at dev-set size
is in BENCHMARKS.md.

What a training run records of its data (`file_table`: {name: content SHA-256} of every clip it reads, names
relative to the dataset root) goes into its checkpoints' metadata, so that a resume can name the clips that
were added, removed or changed since (`compare`; `training.loop.check_same_clips`). `digest` is the SHA-256
of such a table (`table_digest`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence

from asd_jax import atomic
from asd_jax.data import records as records_lib

_CACHE_VERSION = 1
CACHE_FILE = "clip_hashes.json"  # the cache's name in a workdir (a training run's, the pipeline's)


def _signature(st: os.stat_result) -> list[int]:
  return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def file_sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


class ContentHashes:
  """Per-file SHA-256 hashes, cached in the JSON file `cache_path` (None: no cache, hash every time)."""

  def __init__(self, cache_path: str | None = None):
    self.cache_path = cache_path
    self.entries: dict[str, dict] = {}
    self.hashed = 0  # files hashed (not served from the cache) by this object
    if cache_path and os.path.isfile(cache_path):
      try:
        with open(cache_path) as f:
          saved = json.load(f)
        if saved.get("version") == _CACHE_VERSION:
          self.entries = saved["files"]
      except (OSError, ValueError, KeyError):
        self.entries = {}  # an unreadable cache only costs a rehash

  def sha256(self, path: str) -> str:
    path = os.path.abspath(path)
    signature = _signature(os.stat(path))
    entry = self.entries.get(path)
    if entry is None or entry["signature"] != signature:
      entry = {"signature": signature, "sha256": file_sha256(path)}
      self.entries[path] = entry
      self.hashed += 1
    return entry["sha256"]

  def save(self) -> None:
    if self.cache_path:
      atomic.write_json(self.cache_path, {"version": _CACHE_VERSION, "files": self.entries}, indent=None)


def file_table(paths: Mapping[str, str], hashes: ContentHashes) -> dict[str, str]:
  """{name: content SHA-256} of the files `paths` ({name: path}), in their order."""
  return {name: hashes.sha256(path) for name, path in paths.items()}


def table_digest(table: Mapping[str, str]) -> str:
  """SHA-256 over `name <tab> content SHA-256` lines of a `file_table`, in its order."""
  h = hashlib.sha256()
  for name, sha256 in table.items():
    h.update(f"{name}\t{sha256}\n".encode())
  return h.hexdigest()


def relative_paths(records: Iterable[records_lib.ClipRecord], root: str) -> dict[str, str]:
  """{path relative to `root`: path} of `records`, in their order (the names of a `file_table`)."""
  return {os.path.relpath(r.path, root): r.path for r in records}


def digest(records: Iterable[records_lib.ClipRecord], root: str, hashes: ContentHashes) -> str:
  """SHA-256 over `relative path <tab> content SHA-256` of every clip, in the order given."""
  return table_digest(file_table(relative_paths(records, root), hashes))


def hashed_table(paths: Mapping[str, str], cache_path: str | None, *, save: bool = True) -> dict[str, str]:
  """`file_table` of `paths` through the hash cache `cache_path` (saved afterwards when `save`)."""
  hashes = ContentHashes(cache_path)
  table = file_table(paths, hashes)
  if save:
    hashes.save()
  return table


def digests(groups: dict[str, Sequence[records_lib.ClipRecord]], root: str, cache_path: str | None) -> dict[str, str]:
  """`digest` of each named group of clips, sharing one hash cache (saved once at the end)."""
  hashes = ContentHashes(cache_path)
  out = {name: digest(records, root, hashes) for name, records in groups.items()}
  hashes.save()
  return out


@dataclasses.dataclass(frozen=True)
class Changes:
  """How a `file_table` differs from an earlier one: names only in the new one, only in the old one, and in both
  with other content (each sorted)."""

  added: tuple[str, ...]
  removed: tuple[str, ...]
  changed: tuple[str, ...]

  def __bool__(self) -> bool:
    return bool(self.added or self.removed or self.changed)

  def describe(self, limit: int = 10) -> str:
    """`1 added, 2 removed, 0 changed:` then one line per kind that has names (at most `limit` each)."""
    lines = [f"{len(self.added)} added, {len(self.removed)} removed, {len(self.changed)} changed in content:"]
    for kind, names in (("added", self.added), ("removed", self.removed), ("changed", self.changed)):
      if names:
        more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
        lines.append(f"  {kind}: {', '.join(names[:limit])}{more}")
    return "\n".join(lines)


def compare(before: Mapping[str, str], now: Mapping[str, str]) -> Changes:
  """The `Changes` from the `file_table` `before` to `now`."""
  return Changes(added=tuple(sorted(set(now) - set(before))), removed=tuple(sorted(set(before) - set(now))),
                 changed=tuple(sorted(n for n in set(before) & set(now) if before[n] != now[n])))
