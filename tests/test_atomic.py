"""Atomic files and folder swaps: a failure mid-write leaves the old version and no partial target."""

import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

from asd_jax import atomic
from tests.conftest import REPO_ROOT


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
  path = str(tmp_path / "results.json")
  atomic.write_json(path, {"a": 1})

  def half_write(f):
    f.write('{"a": ')
    raise OSError("No space left on device")

  with pytest.raises(OSError, match="No space"):
    atomic.write_with(path, half_write)
  assert open(path).read() == '{\n "a": 1\n}'
  assert os.listdir(tmp_path) == ["results.json"]
  atomic.save_npz(str(tmp_path / "x.npz"), a=np.arange(3))
  with np.load(tmp_path / "x.npz") as f:
    np.testing.assert_array_equal(f["a"], np.arange(3))


def test_folder_swap_and_recovery_after_a_kill_between_the_renames(tmp_path, monkeypatch):
  final = str(tmp_path / "detector")
  for version in ("old", "new"):
    staging = atomic.staging_dir(final)
    (pathlib.Path(staging) / "version").write_text(version)
    if version == "new":  # killed after moving the old folder aside, before moving the new one in
      calls = []

      def move(src, dst):
        calls.append(src)
        if len(calls) == 2:
          raise KeyboardInterrupt
        os.rename(src, dst)

      monkeypatch.setattr(atomic, "_move", move)
      with pytest.raises(KeyboardInterrupt):
        atomic.publish_dir(staging, final)
      monkeypatch.undo()
      assert not os.path.exists(final)
      atomic.recover_dir(final)
      assert open(os.path.join(final, "version")).read() == "old"
      staging = atomic.staging_dir(final)  # the next attempt clears the stale staging folder
      (pathlib.Path(staging) / "version").write_text(version)
    atomic.publish_dir(staging, final)
    assert open(os.path.join(final, "version")).read() == version
  assert os.listdir(tmp_path) == ["detector"]


# ---------------------------------------------------------------------------------------------------------
# Temporaries left by killed writers: removed by the next write or workdir lock, never a live writer's.

WRITER = """
import os, signal, sys
from asd_jax import atomic

def write(f):
  f.write("half")
  f.flush()
  if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)  # no Python cleanup: the temporary stays
  print("writing", flush=True)
  sys.stdin.readline()  # a live writer: holds its temporary until told to go on
  f.write(" and the rest")

atomic.write_with(sys.argv[1], write)
"""


def _writer(path, mode):
  return subprocess.Popen([sys.executable, "-c", WRITER, str(path), mode], cwd=REPO_ROOT, text=True,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def _temporaries(folder):
  return sorted(p.name for p in pathlib.Path(folder).rglob(".*.tmp-*"))


def test_the_next_write_removes_a_killed_writers_temporary_and_keeps_a_live_ones(tmp_path):
  path = tmp_path / "results.json"
  killed = _writer(path, "kill")
  killed.wait(timeout=60)
  assert killed.returncode == -signal.SIGKILL, killed.stderr.read()
  [dead] = _temporaries(tmp_path)
  assert dead.startswith(".results.json.tmp-") and f"-{killed.pid}-" in dead
  live = _writer(path, "wait")
  try:
    assert live.stdout.readline() == "writing\n", live.stderr.read()
    [alive] = _temporaries(tmp_path)  # the live writer's start removed the dead one's temporary
    assert f"-{live.pid}-" in alive
    atomic.write_json(str(path), {"a": 1})  # a write while it writes leaves its temporary alone
    assert _temporaries(tmp_path) == [alive]
    assert json.loads(path.read_text()) == {"a": 1}
    live.communicate("\n", timeout=60)
  finally:
    live.kill()
  assert live.returncode == 0
  assert os.listdir(tmp_path) == ["results.json"] and path.read_text() == "half and the rest"


def test_taking_a_workdir_lock_removes_the_temporaries_of_dead_writers_below_it(tmp_path):
  from asd_jax import workdir_lock

  models = tmp_path / "models" / "a"
  models.mkdir(parents=True)
  killed = _writer(models / "embeddings.npz", "kill")
  killed.wait(timeout=60)
  assert killed.returncode == -signal.SIGKILL
  others = [".old.json.tmp-k2l1m3n4",  # an older naming: its writer is unknown, so it is left alone
            ".x.json.tmp-another_host-1-abcd1234"]  # another host's process cannot be checked from here
  for name in others:
    (tmp_path / name).write_text("")
  assert len(_temporaries(tmp_path)) == 3
  with workdir_lock.hold(tmp_path, "test"):
    assert _temporaries(tmp_path) == sorted(others)
