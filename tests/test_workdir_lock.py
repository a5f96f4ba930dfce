"""One process per workdir: a second `train` is refused naming the holder's PID before it touches anything,
the lock of a process killed with SIGKILL is taken over, and the lock is re-entrant within a process."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from asd_jax import workdir_lock

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

HOLD = """
import sys, time
from asd_jax import workdir_lock
with workdir_lock.hold(sys.argv[1], "holder-test"):
  print("locked", flush=True)
  time.sleep(600)
"""


def test_second_train_on_a_workdir_is_refused_naming_the_holder(tmp_path):
  with workdir_lock.hold(tmp_path / "work", "pipeline"):
    result = subprocess.run(
        [sys.executable, "-m", "asd_jax.train", "--config=configs/demo.py", f"--workdir={tmp_path / 'work'}",
         f"--config.data.root={tmp_path / 'data'}"],
        cwd=REPO_ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=120)
    assert (tmp_path / "work" / ".lock").read_text().startswith(f"process {os.getpid()} on ")
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
  error = result.stderr[result.stderr.index("error: "):].strip()
  assert error.startswith(f"error: workdir {tmp_path / 'work'} is in use by process {os.getpid()} on ")
  assert "(pipeline, since " in error and "\n" not in error
  assert sorted(p.name for p in (tmp_path / "work").iterdir()) == [".lock"]  # nothing else written
  assert (tmp_path / "work" / ".lock").read_text() == ""  # released: nobody holds it


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(workdir_lock.WorkdirLockedError, match=f"in use by process {holder.pid} on .*holder-test"):
      with workdir_lock.hold(tmp_path, "train"):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
  finally:
    if holder.poll() is None:
      holder.kill()
  assert str(holder.pid) in (tmp_path / ".lock").read_text()  # the dead process' PID is still written there
  deadline = time.monotonic() + 10
  while True:  # the kernel drops the flock with the process; give it a moment to reap
    try:
      with workdir_lock.hold(tmp_path, "train"):
        assert (tmp_path / ".lock").read_text().startswith(f"process {os.getpid()} ")
      break
    except workdir_lock.WorkdirLockedError:
      assert time.monotonic() < deadline
      time.sleep(0.1)


def test_the_lock_is_reentrant_within_a_process(tmp_path):
  with workdir_lock.hold(tmp_path, "pipeline"):
    with workdir_lock.hold(tmp_path, "train"):
      assert "(pipeline, since" in (tmp_path / ".lock").read_text()
    assert "(pipeline, since" in (tmp_path / ".lock").read_text()  # still held by the outer block
  with workdir_lock.hold(tmp_path, "embed"):
    assert "(embed, since" in (tmp_path / ".lock").read_text()
  with workdir_lock.hold("gs://bucket/run", "train", enabled=True):  # remote paths are not locked
    pass


def test_embed_on_a_workdir_in_use_is_refused_before_it_reads_anything(tmp_path):
  from asd_jax.embedding import embed
  from configs import demo

  config = demo.get_config()
  config.data.root = str(tmp_path / "absent")  # never read: the lock is taken first
  holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "work")], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(workdir_lock.WorkdirLockedError,
                       match=f"workdir {tmp_path / 'work'} is in use by process {holder.pid} on .*holder-test"):
      embed.embed(config, str(tmp_path / "work"), progress=False)
  finally:
    holder.kill()
    holder.wait(timeout=30)
  assert sorted(p.name for p in (tmp_path / "work").iterdir()) == [".lock"]  # nothing else written
  with pytest.raises(ValueError, match="not a directory"):  # free again: this run gets as far as the dataset
    embed.embed(config, str(tmp_path / "work"), progress=False)
