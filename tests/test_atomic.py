"""Atomic files and folder swaps: a failure mid-write leaves the old version and no partial target."""

import os
import pathlib

import numpy as np
import pytest

from asd_jax import atomic


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
