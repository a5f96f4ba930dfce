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
