"""Atomic writes: a file or folder that a later run reads is either the old one or the complete new one.

A file is written under a temporary name in its own folder (same file system), flushed to disk, then renamed
over the target with `os.replace`, which POSIX makes atomic: a kill or a full disk mid-write leaves the old
file (or none) and a stray `.<name>.tmp-<host>-<pid>-*` file, never a truncated target. A failed write is
raised naming its target (`naming`: a full disk's OSError names no file). The temporary names its
writer, so stale ones can be removed safely (`remove_stale_temporaries`): only those of this host whose process
no longer exists, never one a live process is writing. (A lock alone would not do: the converters and
`evaluate --json` write outside any workdir lock, and a pod's hosts share a workdir unlocked.) The next write
of the same file removes its stale temporaries, and taking a workdir's lock removes all of them below the
workdir (`workdir_lock.hold`: the start of `train`, `embed`, `pretrain` and `pipeline`).

A folder is built under a temporary name next to its target (`staging_dir`), then swapped in by
`publish_dir`: the old folder is renamed aside, the new one renamed into place, the old one deleted. A kill
between the two renames leaves the old folder under its retired name; `recover_dir` (called by readers and by
the next `publish_dir`) puts it back, so a reader always finds the old folder or the new one.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

_RETIRED = ".retired-"
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once at import (os.umask can only be read by setting it)
_STAGING = ".staging-"
_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"  # no "-": the name parses unambiguously
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.tmp-(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-[a-z0-9_]+$")


def _temporary_prefix(name: str) -> str:
  return f".{name}.tmp-{_HOST}-{os.getpid()}-"


def _alive(pid: int) -> bool:
  """Whether process `pid` exists on this host (a zombie or another user's process counts as alive)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def is_stale_temporary(name: str) -> bool:
  """Whether `name` is a temporary of `write_with` whose writer, on this host, no longer runs."""
  match = _TEMPORARY.match(name)
  return bool(match) and match["host"] == _HOST and not _alive(int(match["pid"]))


def remove_stale_temporaries(folder: str, *, target: str | None = None, recursive: bool = False) -> list[str]:
  """Removes the temporaries that killed writers left in `folder` (only those of file `target` when given; in
  every subfolder too when `recursive`); returns their paths. A live writer's temporary is kept."""
  walk = os.walk(folder) if recursive else [(folder, None, os.listdir(folder) if os.path.isdir(folder) else [])]
  removed = []
  for root, _, names in walk:
    for name in names:
      if (target is None or name.startswith(f".{target}.tmp-")) and is_stale_temporary(name):
        with contextlib.suppress(FileNotFoundError):  # another process removed it first
          os.unlink(os.path.join(root, name))
          removed.append(os.path.join(root, name))
  return removed


def _move(src: str, dst: str) -> None:
  """`os.rename` (one place, so tests can interrupt a folder swap between its two renames)."""
  os.rename(src, dst)


@contextlib.contextmanager
def naming(path: str | os.PathLike) -> Iterator[None]:
  """Re-raises an OSError that names no file (a write on a full disk: `[Errno 28] No space left on device`) as
  one of the same errno naming `path`: `[Errno 28] No space left on device: '<path>'`."""
  try:
    yield
  except OSError as e:
    if e.filename is not None or e.errno is None:
      raise
    raise OSError(e.errno, e.strerror, os.fspath(path)) from e


@contextlib.contextmanager
def _temporary_beside(path: str, mode: str) -> Iterator[io.IOBase]:
  with naming(path), _replaced_by_temporary(path, mode) as f:
    yield f


@contextlib.contextmanager
def _replaced_by_temporary(path: str, mode: str) -> Iterator[io.IOBase]:
  folder = os.path.dirname(os.path.abspath(path)) or "."
  remove_stale_temporaries(folder, target=os.path.basename(path))
  fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(os.path.basename(path)), dir=folder)
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
