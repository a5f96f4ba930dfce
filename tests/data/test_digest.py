"""Content digests: change with any clip's bytes (even at the same size and modification time), reuse the cache."""

import os

import pytest

from asd_jax.data import digest
from asd_jax.data.records import ClipRecord


@pytest.fixture
def clips(tmp_path):
  root = tmp_path / "data"
  (root / "fan" / "train").mkdir(parents=True)
  records = []
  for i in range(3):
    path = root / "fan" / "train" / f"section_00_source_train_normal_{i:04d}.wav"
    path.write_bytes(bytes([i]) * 1000)
    records.append(ClipRecord(str(path), "fan", "00", "train", "source", "normal"))
  return root, records


def test_digest_is_a_hash_of_names_and_contents(clips, tmp_path):
  import hashlib

  root, records = clips
  by_hand = hashlib.sha256()
  for r in records:
    content = hashlib.sha256(open(r.path, "rb").read()).hexdigest()
    by_hand.update(f"{os.path.relpath(r.path, root)}\t{content}\n".encode())
  assert digest.digest(records, str(root), digest.ContentHashes()) == by_hand.hexdigest()


def test_a_replaced_recording_of_the_same_size_and_mtime_changes_the_digest(clips, tmp_path):
  root, records = clips
  cache = str(tmp_path / "hashes.json")
  before = digest.digests({"all": records}, str(root), cache)["all"]
  target = records[1].path
  st = os.stat(target)
  with open(target, "r+b") as f:  # same size, other bytes
    f.write(b"\xff" * 10)
  os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # as `cp -p` or `rsync -t` would leave it
  assert os.stat(target).st_size == st.st_size and os.stat(target).st_mtime_ns == st.st_mtime_ns
  hashes = digest.ContentHashes(cache)
  assert digest.digest(records, str(root), hashes) != before
  assert hashes.hashed == 1  # only the changed file was read again (its ctime moved)


def test_an_unchanged_dataset_is_served_from_the_cache(clips, tmp_path):
  root, records = clips
  cache = str(tmp_path / "hashes.json")
  first = digest.digests({"all": records, "two": records[:2]}, str(root), cache)
  hashes = digest.ContentHashes(cache)
  assert digest.digest(records, str(root), hashes) == first["all"] and hashes.hashed == 0
  assert first["two"] != first["all"]
  (tmp_path / "hashes.json").write_text("{not json")  # a damaged cache only costs a rehash
  assert digest.digests({"all": records}, str(root), cache)["all"] == first["all"]
