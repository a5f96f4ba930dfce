"""Atomic writes: a file or folder that a later run reads is either the old one or the complete new one.

A file is written under a temporary name in its own folder (same file system), flushed to disk, then renamed
over the target with `os.replace`, which POSIX makes atomic: a kill or a full disk mid-write leaves the old
file (or none) and a stray `.<name>.tmp-*` file, never a truncated target. A folder is built under a
temporary name next to its target (`staging_dir`), then swapped in by `publish_dir`: the old folder is renamed
aside, the new one renamed into place, the old one deleted. A kill between the two renames leaves the old
folder under its retired name; `recover_dir` (called by readers and by the next `publish_dir`) puts it back, so
a reader always finds the old folder or the new one.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

_RETIRED = ".retired-"
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once at import (os.umask can only be read by setting it)
_STAGING = ".staging-"


def _move(src: str, dst: str) -> None:
  """`os.rename` (one place, so tests can interrupt a folder swap between its two renames)."""
  os.rename(src, dst)


@contextlib.contextmanager
def _temporary_beside(path: str, mode: str) -> Iterator[io.IOBase]:
  folder = os.path.dirname(os.path.abspath(path)) or "."
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=folder)
  # mkstemp makes the file private (0600); give it the mode a plain open() would (or the replaced file's).
  os.chmod(tmp, os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o666 & ~_UMASK)
  try:
    with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise


def write_with(path: str, write: Callable[[Any], None], *, binary: bool = False) -> None:
  """Calls `write(file)` on a temporary file beside `path`, then renames it to `path`."""
  with _temporary_beside(path, "wb" if binary else "w") as f:
    write(f)


def write_text(path: str, text: str) -> None:
  write_with(path, lambda f: f.write(text))


def write_bytes(path: str, data: bytes) -> None:
  write_with(path, lambda f: f.write(data), binary=True)


def write_json(path: str, obj: Any, *, indent: int | None = 1) -> None:
  write_with(path, lambda f: json.dump(obj, f, indent=indent))


def save_npz(path: str, **arrays: np.ndarray) -> None:
  """`np.savez` to `path` (which must end in .npz) through a temporary file."""
  if not path.endswith(".npz"):
    raise ValueError(f"{path}: an .npz path is expected")
  write_with(path, lambda f: np.savez(f, **arrays), binary=True)


def staging_dir(final: str) -> str:
  """A new empty folder beside `final` to build its next version in (stale ones are removed first)."""
  final = os.path.abspath(final)
  for stale in glob.glob(glob.escape(final) + _STAGING + "*"):
    shutil.rmtree(stale, ignore_errors=True)
  os.makedirs(os.path.dirname(final), exist_ok=True)
  return tempfile.mkdtemp(prefix=os.path.basename(final) + _STAGING, dir=os.path.dirname(final))


def recover_dir(final: str) -> None:
  """Puts back the folder a `publish_dir` killed between its two renames had moved aside (if any), and removes
  retired folders that are no longer needed."""
  final = os.path.abspath(final)
  retired = sorted(glob.glob(glob.escape(final) + _RETIRED + "*"), key=os.path.getmtime)
  if retired and not os.path.exists(final):
    _move(retired.pop(), final)
  for old in retired:
    shutil.rmtree(old, ignore_errors=True)


def publish_dir(staging: str, final: str) -> None:
  """Moves the complete folder `staging` (from `staging_dir`) to `final`, replacing what is there."""
  final = os.path.abspath(final)
  recover_dir(final)
  retired = None
  if os.path.exists(final):
    retired = tempfile.mkdtemp(prefix=os.path.basename(final) + _RETIRED, dir=os.path.dirname(final))
    os.rmdir(retired)  # only the unique name is wanted
    _move(final, retired)
  _move(staging, final)
  if retired is not None:
    shutil.rmtree(retired, ignore_errors=True)
