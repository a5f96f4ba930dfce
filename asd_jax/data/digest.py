"""Content digests of a list of clips, cheap to recompute on an unchanged dataset.

`digest(records, root, cache)` is a SHA-256 over every clip's path (relative to `root`) and the SHA-256 of its
bytes, so it changes when any clip is added, removed, renamed or changed in content, and only then (DCASE clips
all have the same size, so size alone misses a replaced recording). Hashing every byte of a dev set on each
run would cost seconds to minutes, so `ContentHashes` keeps each file's hash in a JSON cache with the file's
stat signature (size, mtime, ctime, inode) and rehashes only files whose signature changed. The ctime is the
point: the kernel sets it on every write or metadata change and no tool can set it back (`cp -p`, `touch -d`
or `rsync -t` restore the mtime, not the ctime), so a replaced file is always rehashed. The cost at dev-set size
is in BENCHMARKS.md.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence

from asd_jax import atomic
from asd_jax.data import records as records_lib

_CACHE_VERSION = 1


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


def digest(records: Iterable[records_lib.ClipRecord], root: str, hashes: ContentHashes) -> str:
  """SHA-256 over `relative path <tab> content SHA-256` of every clip, in the order given."""
  h = hashlib.sha256()
  for r in records:
    h.update(f"{os.path.relpath(r.path, root)}\t{hashes.sha256(r.path)}\n".encode())
  return h.hexdigest()


def digests(groups: dict[str, Sequence[records_lib.ClipRecord]], root: str, cache_path: str | None) -> dict[str, str]:
  """`digest` of each named group of clips, sharing one hash cache (saved once at the end)."""
  hashes = ContentHashes(cache_path)
  out = {name: digest(records, root, hashes) for name, records in groups.items()}
  hashes.save()
  return out
