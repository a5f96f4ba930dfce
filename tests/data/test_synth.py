"""Synthetic dataset: layout parses back into the records it was made with, ground truth agrees."""

import csv
import pathlib

import numpy as np
import pytest

from asd_jax.audio import wav as wavlib
from asd_jax.data import labels, layout, synth


@pytest.fixture(scope="module")
def made(tmp_path_factory):
  root = tmp_path_factory.mktemp("synth") / "dcase"
  summary = synth.generate(root, scale=0.01, seed=7, machines=["ToyCar", "bearing"], duration=0.2)
  return root, summary


def _rows(path):
  with open(path, newline="") as f:
    return list(csv.reader(f))


def test_scan_gives_back_the_written_records(made):
  root, summary = made
  assert layout.scan_dataset(root, attributes="require") == summary["records"]


def test_counts_and_classes(made):
  root, summary = made
  c = synth.counts(0.01)
  assert c == {"source_train": 10, "target_train": 3, "test_per_domain_label": 5, "supplemental": 3}
  records = summary["records"]
  for machine in ("ToyCar", "bearing"):
    assert len(layout.select(records, machine=machine, split="train", domain="source")) == 10
    assert len(layout.select(records, machine=machine, split="train", domain="target")) == 3
    for domain in ("source", "target"):
      for label in ("normal", "anomaly"):
        assert len(layout.select(records, machine=machine, split="test", domain=domain, label=label)) == 5
    assert len(layout.select(records, machine=machine, kind="clean")) == 3
    assert len(layout.select(records, machine=machine, kind="noise")) == 3
  space = labels.LabelSpace.from_records(r for r in records if r.split != "test")
  assert space.names == sorted(summary["machines"]["ToyCar"]["classes"] + summary["machines"]["bearing"]["classes"])
  assert "bearing/noAttribute" in space.names  # attributes hidden as in the real 2025 dev set
  assert {"ToyCar/clean", "ToyCar/noise", "bearing/clean", "bearing/noise"} <= set(space.names)


def test_attributes_csv_has_official_columns(made):
  root, _ = made
  rows = _rows(root / "ToyCar/attributes_00.csv")
  assert rows[0] == ["file_name", "d1p", "d1v", "d2p", "d2v", "d3p", "d3v"]
  name, *cells = rows[1]
  assert name.startswith("ToyCar/train/section_00_source_train_normal_0000_")
  assert pathlib.Path(name).stem.endswith("_".join(cells))
  assert _rows(root / "bearing/attributes_00.csv")[1][1] == "noAttribute"


def test_ground_truth_matches_records_and_eval_copies(made):
  root, summary = made
  for machine in ("ToyCar", "bearing"):
    tests = {pathlib.Path(r.path).stem: r for r in layout.select(summary["records"], machine=machine, split="test")}
    f = f"ground_truth_{machine}_section_00_test.csv"
    data, domain, attrs = (_rows(root / d / f) for d in ("ground_truth_data", "ground_truth_domain", "ground_truth_attributes"))
    assert [r[0] for r in data] == [f"section_00_{i:04d}.wav" for i in range(len(tests))]
    assert [r[0] for r in domain] == [r[0] for r in attrs] == [r[0] for r in data]
    assert sorted(r[1] for r in attrs) == sorted(tests)
    for (short, y), (_, d), (_, full) in zip(data, domain, attrs):
      record = tests[full]
      assert int(y) == (record.label == "anomaly") and int(d) == (record.domain == "target")
      np.testing.assert_array_equal(wavlib.load_wav(root / "eval_style" / machine / "test" / short, duration_s=None),
                                    wavlib.load_wav(record.path, duration_s=None))
    hidden = layout.scan_dataset(root / "eval_style" / machine)
    assert all(r.label is None and r.domain is None for r in hidden) and len(hidden) == len(tests)


def test_audio_format_and_reproducibility(made, tmp_path):
  root, summary = made
  r = summary["records"][0]
  x = wavlib.load_wav(r.path, duration_s=None, strict=True)
  assert x.shape == (3200,) and 0 < np.abs(x).max() <= 1
  # Same seed -> identical clip, even when generated alone; another seed -> different.
  again = synth.generate(tmp_path / "a", scale=0.01, seed=7, machines=["bearing"], duration=0.2)
  other = synth.generate(tmp_path / "b", scale=0.01, seed=8, machines=["bearing"], duration=0.2)
  mine = {pathlib.Path(p.path).name: p.path for p in layout.select(summary["records"], machine="bearing")}
  for a, b in zip(again["records"][:5], other["records"][:5]):
    name = pathlib.Path(a.path).name
    np.testing.assert_array_equal(wavlib.load_wav(a.path, duration_s=None), wavlib.load_wav(mine[name], duration_s=None))
    assert not np.array_equal(wavlib.load_wav(a.path, duration_s=None), wavlib.load_wav(b.path, duration_s=None))


def test_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="unknown machine"):
    synth.generate(tmp_path / "x", machines=["drill"])
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "f").write_text("")
  with pytest.raises(FileExistsError):
    synth.generate(tmp_path / "full")


@pytest.mark.slow
def test_mean_logmel_knn_baseline_is_between_chance_and_perfect(tmp_path):
  import librosa  # pylint: disable=g-import-not-at-top
  import scipy.signal  # pylint: disable=g-import-not-at-top
  from sklearn.metrics import roc_auc_score  # pylint: disable=g-import-not-at-top
  summary = synth.generate(tmp_path / "d", scale=0.3, seed=0, duration=2.0)
  records = summary["records"]
  mel = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=64)
  def feature(r):
    _, _, spec = scipy.signal.stft(wavlib.load_wav(r.path, duration_s=2.0), nperseg=1024, noverlap=512)
    return np.log(mel @ np.abs(spec) ** 2 + 1e-8).mean(1)
  aucs = []
  for machine in layout.machines(records):
    train = np.stack([feature(r) for r in layout.select(records, machine=machine, split="train")])
    test = layout.select(records, machine=machine, split="test")
    dist = ((np.stack([feature(r) for r in test])[:, None] - train[None]) ** 2).sum(-1).min(1)
    for domain in ("source", "target"):
      idx = [i for i, r in enumerate(test) if r.domain == domain]
      aucs.append(roc_auc_score([test[i].label == "anomaly" for i in idx], dist[idx]))
  assert 0.6 < np.mean(aucs) < 0.97, aucs


def test_target_train_override_adds_target_clips_and_keeps_the_others(made, tmp_path):
  root, _ = made
  more = synth.generate(tmp_path / "more", scale=0.01, seed=7, machines=("bearing",), duration=0.2, target_train=10)
  train = layout.select(more["records"], split="train")
  assert len(layout.select(train, domain="target")) == 10 and len(layout.select(train, domain="source")) == 10
  for r in layout.select(layout.scan_dataset(root), machine="bearing", split="train"):  # 10 source + 3 target
    twin = tmp_path / "more" / "bearing" / "train" / pathlib.Path(r.path).name
    np.testing.assert_array_equal(wavlib.load_wav(twin, duration_s=None), wavlib.load_wav(r.path, duration_s=None))
  with pytest.raises(ValueError, match="target_train must be >= 3"):
    synth.generate(tmp_path / "few", scale=0.01, machines=("bearing",), duration=0.2, target_train=2)


def test_test_clips_override_adds_test_clips_and_keeps_the_others(made, tmp_path):
  root, _ = made
  more = synth.generate(tmp_path / "more", scale=0.01, seed=7, machines=("bearing",), duration=0.2, test_clips=8)
  test = layout.select(more["records"], split="test")
  for domain in ("source", "target"):
    for label in ("normal", "anomaly"):
      assert len([r for r in test if r.domain == domain and r.label == label]) == 8, (domain, label)
  assert len(layout.select(more["records"], split="train")) == 13  # 10 source + 3 target, as without it
  for r in layout.select(layout.scan_dataset(root), machine="bearing"):  # every clip of the smaller set is kept
    twin = tmp_path / "more" / "bearing" / pathlib.Path(r.path).parent.name / pathlib.Path(r.path).name
    np.testing.assert_array_equal(wavlib.load_wav(twin, duration_s=None), wavlib.load_wav(r.path, duration_s=None))
  with pytest.raises(ValueError, match="test_clips must be >= 1"):
    synth.generate(tmp_path / "none", scale=0.01, machines=("bearing",), duration=0.2, test_clips=0)


def test_supplementary_clips_have_the_real_2025_names(made):
  # The real dev set's form: <machine>/supplemental/section_00_machine_source_0000_noAttribute.wav, noise-only
  # clips the same with `noise` (the generator alternates their domain).
  root, summary = made
  names = sorted(p.name for p in (root / "ToyCar" / "supplemental").iterdir())
  assert names == ["section_00_machine_source_0000_noAttribute.wav", "section_00_machine_source_0001_noAttribute.wav",
                   "section_00_machine_source_0002_noAttribute.wav", "section_00_noise_source_0000_noAttribute.wav",
                   "section_00_noise_source_0002_noAttribute.wav", "section_00_noise_target_0001_noAttribute.wav"]
  kinds = {pathlib.Path(r.path).name.split("_")[2]: r.kind for r in summary["records"] if r.split == "supplemental"}
  assert kinds == {"machine": "clean", "noise": "noise"}


def test_strength_override_changes_only_the_anomalies(made, tmp_path):
  root, _ = made
  weak = synth.generate(tmp_path / "weak", scale=0.01, seed=7, machines=("bearing",), duration=0.2,
                        strength=(0.05, 0.05))
  assert weak["strength"] == [0.05, 0.05]
  changed = 0
  for r in layout.select(layout.scan_dataset(root), machine="bearing"):
    twin = tmp_path / "weak" / "bearing" / pathlib.Path(r.path).parent.name / pathlib.Path(r.path).name
    a, b = wavlib.load_wav(twin, duration_s=None), wavlib.load_wav(r.path, duration_s=None)
    if r.label == "anomaly":  # default strengths ~ U(0.1, 1) are all > 0.05: every anomaly differs
      changed += not np.array_equal(a, b)
    else:
      np.testing.assert_array_equal(a, b)
  assert changed == len(layout.select(weak["records"], machine="bearing", label="anomaly")) > 0
  for bad in ((0.0, 0.5), (0.6, 0.5), (0.5,)):
    with pytest.raises(ValueError, match="strength must be"):
      synth.generate(tmp_path / f"bad{len(bad)}{bad[0]}", scale=0.01, machines=("bearing",), duration=0.2,
                     strength=bad)
