"""The evaluator's 2026 parts: baseline-style score file names and the release machine lists.

The name pattern is the official baseline's and evaluators' (`anomaly_score_DCASE<year>T2<machine>_section_<ss>_
test_seed<seed><tag>_Eval.csv`; seed 13711 and tag `_id(0_)` are nttcslab/dcase2024_task2_evaluator's defaults);
clip names are real 2026 evaluation test names (`section_00_0000.wav`, from the file lists cited in
tests/data/test_names_2026.py).
"""

import os
import shutil

import numpy as np
import pytest

from asd_jax.data import releases
from asd_jax.data.records import ClipRecord
from asd_jax.evaluation import files, official


def _records(machine, n=20, seed=0):
  rng = np.random.default_rng(seed)
  recs = []
  for i in range(n):
    domain, label = ("source", "target")[i % 2], ("normal", "anomaly")[(i // 2) % 2]
    recs.append(ClipRecord(path=f"/x/{machine}/test/section_00_{i:04d}.wav", machine=machine, section="00",
                           split="test", domain=domain, label=label))
  scores = rng.normal(size=n) + np.array([r.label == "anomaly" for r in recs])
  return recs, scores


def _as_baseline(directory, machine, seed=13711, tag="_id(0_)"):
  """Renames a section's plain files to the baseline's names."""
  for kind, plain in (("anomaly_score", files.score_file_name(machine, "00")),
                      ("decision_result", files.decision_file_name(machine, "00"))):
    os.rename(os.path.join(directory, plain),
              os.path.join(directory, files.baseline_file_name(kind, 2026, machine, "00", seed, tag)))


def test_baseline_names_evaluate_like_plain_names_and_toycar_is_not_toycaremu(tmp_path):
  recs, scores = [], []
  for k, machine in enumerate(("ToyCar", "ToyCarEmu")):
    r, s = _records(machine, seed=k)
    recs += r
    scores.append(s)
  scores = np.concatenate(scores)
  decisions = (scores > 0.5).astype(int)
  files.write_submission(str(tmp_path / "plain"), recs, scores, decisions)
  files.write_ground_truth(str(tmp_path / "gt"), recs)
  plain = official.evaluate_dirs(str(tmp_path / "plain"), str(tmp_path / "gt"))
  shutil.copytree(tmp_path / "plain", tmp_path / "baseline")
  for machine in ("ToyCar", "ToyCarEmu"):
    _as_baseline(str(tmp_path / "baseline"), machine)
  assert sorted(os.listdir(tmp_path / "baseline"))[0] == (
      "anomaly_score_DCASE2026T2ToyCarEmu_section_00_test_seed13711_id(0_)_Eval.csv")
  paths = files.section_files(str(tmp_path / "baseline"), "ToyCar", "00")
  assert [os.path.basename(p) for p in paths] == [
      "anomaly_score_DCASE2026T2ToyCar_section_00_test_seed13711_id(0_)_Eval.csv",
      "decision_result_DCASE2026T2ToyCar_section_00_test_seed13711_id(0_)_Eval.csv"]
  baseline = official.evaluate_dirs(str(tmp_path / "baseline"), str(tmp_path / "gt"))
  assert baseline.official_score == plain.official_score
  assert [(s.machine, s.auc_source, s.pauc) for s in baseline.sections] == [
      (s.machine, s.auc_source, s.pauc) for s in plain.sections]


def test_several_baseline_runs_must_be_told_apart(tmp_path):
  recs, scores = _records("Sander")
  files.write_submission(str(tmp_path / "a"), recs, scores, (scores > 0).astype(int))
  _as_baseline(str(tmp_path / "a"), "Sander", seed=1)
  files.write_submission(str(tmp_path / "a"), recs, -scores, (scores > 0).astype(int))
  _as_baseline(str(tmp_path / "a"), "Sander", seed=2)
  with pytest.raises(ValueError, match=r"2 baseline-style score files for Sander section 00 .*seed1_id\(0_\)_Eval"
                                       r".*say which seed and tag"):
    files.section_files(str(tmp_path / "a"), "Sander", "00")
  score, decision = files.section_files(str(tmp_path / "a"), "Sander", "00", seed=2)
  assert score.endswith("seed2_id(0_)_Eval.csv")
  assert decision.endswith("decision_result_DCASE2026T2Sander_section_00_test_seed2_id(0_)_Eval.csv")
  files.write_ground_truth(str(tmp_path / "gt"), recs)
  truth = files.read_ground_truth(str(tmp_path / "gt"))[0]
  got, _ = files.read_submission_section(str(tmp_path / "a"), truth, seed=1, tag="_id(0_)")
  np.testing.assert_array_equal(got, [dict(zip([os.path.basename(r.path) for r in recs], scores))[c]
                                      for c in truth.clips])


def test_a_missing_section_names_the_plain_file(tmp_path):
  recs, scores = _records("ToyDrone")
  files.write_ground_truth(str(tmp_path / "gt"), recs)
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="anomaly_score_ToyDrone_section_00_test.csv"):
    official.evaluate_dirs(str(tmp_path / "empty"), str(tmp_path / "gt"))


def test_ground_truth_of_a_release_must_hold_its_machine_types(tmp_path):
  recs = []
  for machine in releases.machines(2026, "eval"):
    recs += _records(machine)[0]
  files.write_ground_truth(str(tmp_path / "gt"), recs)
  truths = files.read_ground_truth(str(tmp_path / "gt"), release=(2026, "eval"))
  assert [t.machine for t in truths] == sorted(releases.machines(2026, "eval"))
  with pytest.raises(ValueError, match=r"not the DCASE 2026 dev set: 7 missing \(ToyCar section 00, .*5 unexpected"):
    files.read_ground_truth(str(tmp_path / "gt"), release=(2026, "dev"))
  os.remove(tmp_path / "gt" / "ground_truth_data" / files.ground_truth_file_name("Sander", "00"))
  with pytest.raises(ValueError, match=r"not the DCASE 2026 eval set: 1 missing \(Sander section 00\)"):
    files.read_ground_truth(str(tmp_path / "gt"), release=(2026, "eval"))
