"""Atomic file writes: a reader (a later run, another process) sees the old file or the new one, never half.

`atomic_path(path)` yields a temporary name in the same folder (so the final `os.replace` is a rename on one
file system, atomic on POSIX and Windows); after the body wrote it, the file is flushed to disk and renamed
over `path`. If the body raises (a full disk, a kill leaves the temporary file at worst), `path` is untouched
and the temporary file is removed. `atomic_write_text` / `atomic_write_bytes` are the one-call forms.
`replace_folder` puts a folder written under a temporary name in place of another.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator

TEMP_PREFIX = ".tmp-"  # temporary names start with this (a reader scanning a folder can skip them)
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once at import (os.umask can only be read by setting it)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Yields a temporary path next to `path`; renames it over `path` when the body returns."""
  path = pathlib.Path(path)
  fd, temp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=path.parent)
  os.close(fd)
  temp = pathlib.Path(temp)
  # mkstemp makes the file private (0600); give it the mode a plain open() would (or the replaced file's).
  os.chmod(temp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_UMASK)
  try:
    yield temp
    with open(temp, "rb+") as f:
      os.fsync(f.fileno())
    os.replace(temp, path)
  finally:
    if temp.exists():
      temp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  with atomic_path(path) as temp:
    temp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  with atomic_path(path) as temp:
    temp.write_text(text)


def replace_folder(new: str | os.PathLike, target: str | os.PathLike) -> None:
  """Renames the folder `new` to `target`, replacing an existing `target` (same file system).

  A folder cannot be renamed over a non-empty one, so an existing `target` is first renamed aside and
  deleted after `new` is in place: a kill leaves `target` old or new, or (between the two renames) the
  old one under `.tmp-old-<name>.<pid>` next to it.
  """
  new, target = pathlib.Path(new), pathlib.Path(target)
  if not target.exists():
    os.rename(new, target)
    return
  old = target.parent / f"{TEMP_PREFIX}old-{target.name}.{os.getpid()}"
  shutil.rmtree(old, ignore_errors=True)
  os.rename(target, old)
  os.rename(new, target)
  shutil.rmtree(old, ignore_errors=True)
