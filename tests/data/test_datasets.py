"""Grain datasets: batch contents, seeded determinism, exact resume, shards, workers, padding."""

import numpy as np
import pytest
import soundfile

from asd_jax.audio import wav as wavlib
from asd_jax.data import datasets, labels, layout, synth
from asd_jax.data import records as rec

CONFIG = datasets.WavConfig(duration_s=0.1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("synth") / "d"
  synth.generate(root, scale=0.01, seed=3, machines=["fan", "valve"], duration=0.1)
  records = layout.scan_dataset(root)
  train = [r for r in records if rec.is_fine_tuning_clip(r)]
  return records, train, labels.LabelSpace.from_records(train)


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_training_batch_contents(data):
  _, train, space = data
  batch = next(iter(datasets.training_dataset(train, space, batch_size=4, seed=0, config=CONFIG,
                                              shard_index=0, shard_count=1)))
  assert batch["wav"].shape == (4, 1600) and batch["wav"].dtype == np.float32
  assert batch["label"].dtype == np.int32 and batch["index"].dtype == np.int32
  for row, i in enumerate(batch["index"]):
    np.testing.assert_array_equal(batch["wav"][row], wavlib.load_wav(train[i].path, duration_s=0.1))
    assert batch["label"][row] == space.index(train[i])


def test_same_seed_same_order_other_seed_differs(data):
  _, train, space = data
  def order(seed):
    ds = datasets.training_dataset(train, space, batch_size=4, seed=seed, config=CONFIG,
                                   shard_index=0, shard_count=1)
    return np.concatenate([b["index"] for b in _take(iter(ds), 6)])
  np.testing.assert_array_equal(order(1), order(1))
  assert not np.array_equal(order(1), order(2))


def test_epochs_cover_all_records_and_reshuffle(data):
  _, train, space = data
  n = len(train)
  ds = datasets.training_dataset(train, space, batch_size=1, seed=0, config=CONFIG, num_epochs=2,
                                 shard_index=0, shard_count=1)
  idx = np.concatenate([b["index"] for b in ds])
  assert sorted(idx[:n]) == list(range(n)) and sorted(idx[n:]) == list(range(n))
  assert not np.array_equal(idx[:n], idx[n:])


def test_restore_from_state_continues_identically(data):
  _, train, space = data
  ds = datasets.training_dataset(train, space, batch_size=4, seed=5, config=CONFIG,
                                 shard_index=0, shard_count=1)
  it = iter(ds)
  _take(it, 3)
  state = it.get_state()
  expected = _take(it, 4)
  fresh = iter(ds)
  fresh.set_state(state)
  for a, b in zip(_take(fresh, 4), expected):
    np.testing.assert_array_equal(a["index"], b["index"])
    np.testing.assert_array_equal(a["wav"], b["wav"])


def test_shards_disjoint_and_covering(data):
  records, _, space = data
  seen = []
  for shard in range(3):
    ds = datasets.inference_dataset(records, space, batch_size=5, config=CONFIG,
                                    shard_index=shard, shard_count=3)
    seen.append({int(i) for b in ds for i, v in zip(b["index"], b["valid"]) if v})
  assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
  assert set().union(*seen) == set(range(len(records)))


def test_inference_is_ordered_padded_and_marks_unknown(data):
  records, train, space = data
  batches = list(datasets.inference_dataset(records, space, batch_size=7, config=CONFIG,
                                            shard_index=0, shard_count=1))
  assert all(b["wav"].shape == (7, 1600) for b in batches)
  valid = np.concatenate([b["valid"] for b in batches])
  idx = np.concatenate([b["index"] for b in batches])[valid]
  np.testing.assert_array_equal(idx, np.arange(len(records)))
  assert valid.sum() == len(records) and (~valid).sum() == (-len(records)) % 7
  last = batches[-1]
  assert not last["wav"][~last["valid"]].any()
  label = np.concatenate([b["label"] for b in batches])[valid]
  assert list(label) == space.labels(records, default=-1)


def test_training_rejects_records_outside_label_space(data):
  records, train, _ = data
  small = labels.LabelSpace.from_records(train[:1])
  with pytest.raises(KeyError, match="not in the label space"):
    datasets.training_dataset(train, small, batch_size=2, seed=0, shard_index=0, shard_count=1)


def test_default_shard_comes_from_jax(data):
  assert datasets.default_shard() == (0, 1)


def test_multi_worker_matches_in_process(data):
  _, train, space = data
  def first(workers):
    ds = datasets.training_dataset(train, space, batch_size=4, seed=9, config=CONFIG,
                                   worker_count=workers, shard_index=0, shard_count=1)
    it = iter(ds)
    out = _take(it, 3)
    it.close() if hasattr(it, "close") else None
    return out
  for a, b in zip(first(0), first(1)):
    np.testing.assert_array_equal(a["index"], b["index"])
    np.testing.assert_array_equal(a["wav"], b["wav"])


def test_wav_config_reads_the_channel_policy_and_a_legacy_config_means_the_mean():
  import ml_collections  # pylint: disable=import-outside-toplevel
  data = ml_collections.ConfigDict(dict(sample_rate=16000, clip_seconds=1.0, strict=False, channels="cancel"))
  assert datasets.wav_config(data).channels == "cancel"
  del data["channels"]
  assert datasets.wav_config(data).channels == "mean"  # saved before the field existed: read as it was then
  data.channels = "both"
  with pytest.raises(ValueError, match="unknown channel policy 'both'"):
    datasets.wav_config(data)


def test_batches_read_clips_with_the_channel_policy(tmp_path):
  """Two-channel clips through the inference dataset: rows are the policy's waveform of each file."""
  rng = np.random.default_rng(0)
  paths = []
  for i in range(3):
    path = tmp_path / f"c{i}.wav"
    soundfile.write(str(path), rng.uniform(-0.5, 0.5, (1600, 2)).astype(np.float32), 16000, subtype="FLOAT")
    paths.append(rec.ClipRecord(path=str(path), machine="m", section="00", split="test"))
  for policy in ("near", "far", "cancel"):
    config = datasets.WavConfig(duration_s=0.1, channels=policy)
    batch = next(iter(datasets.inference_dataset(paths, None, batch_size=3, config=config, shard_index=0,
                                                 shard_count=1)))
    for row, r in enumerate(paths):
      np.testing.assert_array_equal(batch["wav"][row], wavlib.load_wav(r.path, duration_s=0.1, channels=policy))
