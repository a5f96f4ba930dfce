"""Synthetic past years: other machine types than the 2025 set, in the 2020 / 2023 layouts the data layer parses."""

import pathlib

import numpy as np
import pytest
import scipy.signal
import soundfile

from asd_jax.data import corpus_sources as cs
from asd_jax.data import layout, synth, synth_past


@pytest.fixture(scope="module")
def made(tmp_path_factory):
  root = tmp_path_factory.mktemp("past") / "p"
  return root, synth_past.generate(root, seed=3, duration=0.25, train=6)


def test_machine_types_are_not_the_2025_ones():
  assert not set(synth_past.MACHINES) & set(synth.MACHINES)
  assert {m.year for m in synth_past.MACHINES.values()} == {2020, 2023}


def test_layout_scans_back_into_the_written_records(made):
  root, summary = made
  scanned = sorted((r for year in ("dcase2020", "dcase2023") for r in layout.scan_dataset(root / year,
                                                                                             attributes="require")),
                   key=lambda r: r.path)
  assert scanned == summary["records"]
  pump = layout.select(scanned, machine="pump")
  assert {r.section for r in pump} == {"00", "02"} and all(r.domain == "source" for r in pump)
  assert pathlib.Path(pump[0].path).name.startswith(("normal_id_", "anomaly_id_"))
  drone = layout.select(scanned, machine="ToyDrone", split="train")
  assert {r.domain for r in drone} == {"source", "target"} and drone[0].attributes
  # 2020: 2 ids x (6 train + 2 + 2 test); 2023: 2*6-8 = 4 source + 3 target train, 2 + 2 test per domain.
  assert summary["machines"]["pump"]["clips"] == {"train": 12, "test": 8}
  assert summary["machines"]["Vacuum"]["clips"] == {"train": 7, "test": 8}
  assert len(layout.select(scanned, split="test", label="anomaly")) == 6 * 4


def test_clips_are_deterministic_bounded_and_of_the_asked_length(made, tmp_path):
  root, summary = made
  again = synth_past.generate(tmp_path / "again", seed=3, duration=0.25, train=6, machines=["shaker"])
  other = synth_past.generate(tmp_path / "other", seed=4, duration=0.25, train=6, machines=["shaker"])
  for r, r_again, r_other in zip(again["records"][:4], [x for x in summary["records"] if x.machine == "shaker"],
                                 other["records"]):
    a, rate = soundfile.read(r.path, dtype="float32")
    assert rate == 16000 and a.shape == (4000,) and np.abs(a).max() <= 1 and np.abs(a).max() > 1e-3
    np.testing.assert_array_equal(a, soundfile.read(r_again.path, dtype="float32")[0])
    assert not np.array_equal(a, soundfile.read(r_other.path, dtype="float32")[0])


def test_machine_types_sound_different(tmp_path):
  """Nearest-centroid on level-normalised log spectra tells the six types apart on held-out clips."""
  summary = synth_past.generate(tmp_path / "s", seed=0, duration=1.0, train=6)
  feats, names = [], []
  for r in summary["records"]:
    if r.split == "train":
      x, _ = soundfile.read(r.path)
      _, spectrum = scipy.signal.welch(x, 16000, nperseg=512)
      log = np.log(spectrum + 1e-12)
      feats.append(log - log.mean())
      names.append(r.machine)
  feats, names = np.array(feats), np.array(names)
  fit = np.arange(len(names)) % 2 == 0
  centroids = {m: feats[fit & (names == m)].mean(0) for m in synth_past.MACHINES}
  predicted = [min(centroids, key=lambda m: np.sum((f - centroids[m]) ** 2)) for f in feats[~fit]]
  assert np.mean(np.array(predicted) == names[~fit]) >= 0.95


def test_corpus_takes_the_training_clips(made):
  root, summary = made
  files = cs.list_source(cs.SourceSpec("past", str(root), "dcase"))
  assert list(files.paths) == [r.path for r in summary["records"] if r.split == "train"]
  assert files.excluded == {"test": 6 * 8}


def test_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="unknown machine"):
    synth_past.generate(tmp_path / "a", machines=["fan"])
  (tmp_path / "b").mkdir()
  (tmp_path / "b" / "x").write_text("")
  with pytest.raises(FileExistsError):
    synth_past.generate(tmp_path / "b")
