"""One process at a time in a workdir: an exclusive `fcntl.flock` on `<workdir>/.lock`, holding the PID.

Two runs writing one workdir would interleave `metrics.jsonl`, race on Orbax's step folders, and the later
one's checkpoint garbage collection would delete the earlier one's checkpoints. `hold(workdir, "train")`
takes the lock for the duration of a `with` block and raises `WorkdirLockedError` (an OSError, so the CLIs
print it as one `error:` line) naming the holder's PID and program when another process has it:

  with workdir_lock.hold(workdir, "train"):
    ...  # checkpoints, metrics, outputs

The kernel releases a flock when its process ends, however it ends (kill -9 included): a lock file left by a
dead process is simply taken over. What a killed run can leave are the hidden temporaries of its atomic
writes; taking the lock removes those of dead processes below the workdir (`atomic.remove_stale_temporaries`).
Within one process the lock is re-entrant (a pipeline holding its workdir can call code that takes it again).
File systems without flock (some network mounts) and remote paths (`gs://...`) are not locked; a warning says so.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import threading
import time
from collections.abc import Iterator

from absl import logging

from asd_jax import atomic

LOCK_FILE = ".lock"

_held: dict[str, list] = {}  # real path of the lock file -> [open file, depth] (this process' locks)
_guard = threading.Lock()


class WorkdirLockedError(OSError):
  """The workdir is in use by another process (named in the message)."""


def _holder(path: str) -> str:
  try:
    with open(path) as f:
      text = f.read().strip()
  except OSError:
    text = ""
  return text or "an unknown process"


@contextlib.contextmanager
def hold(workdir: str | os.PathLike, program: str = "asd_jax", *, enabled: bool = True) -> Iterator[None]:
  """Holds the exclusive lock of `workdir` (created if missing) while the block runs.

  Args:
    workdir: the run's folder; the lock file is `<workdir>/.lock`.
    program: what holds it (shown to a second process), e.g. "train".
    enabled: False does nothing (e.g. on every process of a multi-host job but the first).

  Raises:
    WorkdirLockedError: another process holds the lock; the message names its PID, host and program.
  """
  workdir = os.fspath(workdir)
  if not enabled or "://" in workdir:
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.realpath(os.path.join(workdir, LOCK_FILE))
  with _guard:
    if path in _held:
      _held[path][1] += 1
      reentered = True
    else:
      reentered = False
  if reentered:
    try:
      yield
    finally:
      with _guard:
        _held[path][1] -= 1
    return

  f = open(path, "a+")  # pylint: disable=consider-using-with  (kept open while the lock is held)
  try:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    f.close()
    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
      raise WorkdirLockedError(
          f"workdir {workdir} is in use by {_holder(path)} (lock file {path}); wait for it to finish, stop it, "
          "or use another workdir") from None
    logging.warning("workdir %s cannot be locked (%s); make sure no other run uses it", workdir, e)
    yield
    return
  f.seek(0)
  f.truncate()
  f.write(f"process {os.getpid()} on {socket.gethostname()} ({program}, since "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n")
  f.flush()
  with _guard:
    _held[path] = [f, 1]
  try:
    for stale in atomic.remove_stale_temporaries(workdir, recursive=True):
      logging.info("removed %s, left by a killed write", stale)
    yield
  finally:
    with _guard:
      del _held[path]
    f.seek(0)
    f.truncate()  # an empty file: nobody holds it
    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    f.close()
