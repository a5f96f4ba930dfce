"""The embeddings file: rows follow the records, non-finite outputs are refused naming the clips, writes are atomic."""

import json
import os

import numpy as np
import pytest

from asd_jax.data.records import ClipRecord
from asd_jax.embedding import store


def _clips(n):
  return [ClipRecord(f"/data/fan/test/section_00_source_test_normal_{i:04d}.wav", "fan", "00", "test")
          for i in range(n)]


def test_round_trip_reorders_rows_to_the_records(tmp_path):
  clips = _clips(4)
  outputs = {"embedding": np.arange(8, dtype=np.float32).reshape(4, 2),
             "layer_embeddings": np.arange(24, dtype=np.float32).reshape(4, 3, 2)}
  path = store.write(str(tmp_path / "m" / store.ARRAYS), outputs, clips, source="s", network="beats", batch_size=8)
  got = store.read(path, clips[::-1])
  np.testing.assert_array_equal(got["embedding"], outputs["embedding"][::-1])
  np.testing.assert_array_equal(got["layer_embeddings"], outputs["layer_embeddings"][::-1])
  meta = json.loads(open(store.records_path(path)).read())
  assert meta["network"] == "beats" and meta["batch_size"] == 8 and len(meta["records"]) == 4
  with pytest.raises(ValueError, match="lacks 1 clips"):
    store.read(path, _clips(5))


def test_a_truncated_embeddings_file_is_one_error_naming_it(tmp_path):
  clips = _clips(3)
  path = store.write(str(tmp_path / store.ARRAYS), {"embedding": np.ones((3, 2), np.float32)}, clips, source="s",
                     network="beats", batch_size=8)
  data = open(path, "rb").read()
  open(path, "wb").write(data[:len(data) // 2])
  with pytest.raises(ValueError, match=f"{path}: not readable as .npz .*re-embed"):
    store.read(path, clips)


def test_non_finite_embeddings_are_refused_naming_the_clips_and_nothing_is_written(tmp_path):
  clips = _clips(5)
  good = {"embedding": np.ones((5, 3), np.float32)}
  path = store.write(str(tmp_path / store.ARRAYS), good, clips, source="s", network="beats", batch_size=8)
  before = open(path, "rb").read()
  bad = {"embedding": np.ones((5, 3), np.float32), "layer_embeddings": np.ones((5, 2, 3), np.float32)}
  bad["embedding"][1, 2] = np.nan
  bad["layer_embeddings"][3, 0, 0] = np.inf
  with pytest.raises(ValueError, match="non-finite embeddings .* for 2 of 5 clips") as info:
    store.write(path, bad, clips, source="s", network="beats", batch_size=8)
  assert clips[1].path in str(info.value) and clips[3].path in str(info.value)
  assert clips[0].path not in str(info.value)
  assert open(path, "rb").read() == before  # the old file is untouched
  assert sorted(os.listdir(tmp_path)) == [store.ARRAYS, "embeddings_records.json"]  # no temporary left


def _full_disk_at(monkeypatch, name):
  """Every fsync of a temporary of `name` fails as a full disk does (the kernel reports ENOSPC of written data when
  it is flushed): the write goes through `atomic`'s own error path."""
  import errno  # pylint: disable=import-outside-toplevel
  real_fsync = os.fsync

  def fsync(fd):
    if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{name}.tmp-"):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_fsync(fd)

  monkeypatch.setattr(os, "fsync", fsync)


def _old_and_new(tmp_path):
  clips = _clips(3)
  old = {"embedding": np.ones((3, 2), np.float32)}
  path = store.write(str(tmp_path / store.ARRAYS), old, clips, source="step 1", network="beats", batch_size=8)
  return path, clips, old, {"embedding": np.full((3, 2), 2.0, np.float32)}


def test_a_full_disk_while_writing_the_arrays_names_the_file_and_leaves_the_old_pair(tmp_path, monkeypatch):
  """Issue 26.3: the message was `[Errno 28] No space left on device`, naming no file, and with room for the records
  but not the arrays the records file was the new step's, the arrays the old step's, and `read` took the pair."""
  path, clips, old, new = _old_and_new(tmp_path)
  _full_disk_at(monkeypatch, store.ARRAYS)
  with pytest.raises(OSError) as error:
    store.write(path, new, clips, source="step 2", network="beats", batch_size=8)
  assert str(error.value) == f"[Errno 28] No space left on device: '{path}'"
  monkeypatch.undo()
  assert sorted(os.listdir(tmp_path)) == [store.ARRAYS, "embeddings_records.json"]  # no temporary left
  assert json.loads(open(store.records_path(path)).read())["source"] == "step 1"  # the old pair, whole
  np.testing.assert_array_equal(store.read(path, clips)["embedding"], old["embedding"])


def test_arrays_of_other_records_are_refused_on_read(tmp_path, monkeypatch):
  """The other order of failure (the arrays written, the records file not): the reader refuses the pair."""
  path, clips, _, new = _old_and_new(tmp_path)
  _full_disk_at(monkeypatch, "embeddings_records.json")
  with pytest.raises(OSError) as error:
    store.write(path, new, clips, source="step 2", network="beats", batch_size=8)
  assert str(error.value) == f"[Errno 28] No space left on device: '{store.records_path(path)}'"
  monkeypatch.undo()
  assert not store.is_pair(path)
  with pytest.raises(ValueError) as error:
    store.read(path, clips)
  assert str(error.value) == (
      f"{path} and {store.records_path(path)} are not one pair: the arrays file holds another digest of the records "
      "they belong to (a write cut short, e.g. by a full disk); re-embed (delete both files)")
  store.write(path, new, clips, source="step 2", network="beats", batch_size=8)  # room again: a whole new pair
  assert store.is_pair(path)
  np.testing.assert_array_equal(store.read(path, clips)["embedding"], new["embedding"])
