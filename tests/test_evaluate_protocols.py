"""Every DCASE year's evaluation protocol on sets named as that year named them, checked against scikit-learn run
here on the same clips (per machine ID, per section and domain, per section), and hand-computed cases; sections
that cannot be evaluated (one class, no target domain, hidden labels) as blank rows with one warning each; the
`evaluate --dataset` command line.

Tolerances: the reference values come from the same scikit-learn ROC AUC on the same clips, only listed in another
order. Scores are continuous random draws (no ties), so `roc_curve` sorts them into the same order and each AUC is
bit-identical; the means and harmonic means over at most a few dozen values may differ in summation order, a few
ulp: `REL = 1e-12` bounds that with a wide margin (ulp 2.2e-16 x 36 values = 8e-15)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from asd_jax.data.records import ClipRecord
from asd_jax.evaluation import files, metrics, official
from asd_jax.evaluation import protocol as protocol_lib
from asd_jax.evaluation.protocol import Protocol

REPO = pathlib.Path(__file__).resolve().parents[1]
REL = 1e-12
EPS = sys.float_info.epsilon


def _touch(path: pathlib.Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(b"")  # evaluation reads names only; the audio is never opened


def _hmean(values):
  return scipy.stats.hmean(np.maximum(values, EPS))


# ------------------------------------------------------------------------------------------------ sets of names
def _make_2020(root: pathlib.Path, rng, ids=None):
  """A DCASE 2020 dev layout: <m>/train/normal_id_XX_*.wav, <m>/test/{normal,anomaly}_id_XX_*.wav.

  Returns {(machine, id): [(name, label, score)]}."""
  ids = ids or {"fan": ("00", "02", "04"), "ToyCar": ("01", "03")}
  truth = {}
  for machine, machine_ids in ids.items():
    for mid in machine_ids:
      _touch(root / machine / "train" / f"normal_id_{mid}_00000000.wav")
      n_normal, n_anomalous = int(rng.integers(6, 12)), int(rng.integers(4, 9))
      rows = []
      for label, n in (("normal", n_normal), ("anomaly", n_anomalous)):
        for i in range(n):
          name = f"{label}_id_{mid}_{i:08d}.wav"
          _touch(root / machine / "test" / name)
          rows.append((name, int(label == "anomaly"), float(rng.normal() + 0.9 * (label == "anomaly"))))
      truth[(machine, mid)] = rows
  return truth


def _make_2021(root: pathlib.Path, rng, sections=("00", "01", "02"), machines=("fan", "ToyTrain")):
  """A DCASE 2021 dev layout: <m>/train/, <m>/source_test/, <m>/target_test/.

  Returns {(machine, section): [(name, label, domain, score)]}."""
  truth = {}
  for machine in machines:
    _touch(root / machine / "train" / "section_00_source_train_normal_0000_strength_1_ambient.wav")
    for section in sections:
      rows = []
      for domain in ("source", "target"):
        for label in ("normal", "anomaly"):
          for i in range(int(rng.integers(4, 9))):
            name = f"section_{section}_{domain}_test_{label}_{i:04d}.wav"
            _touch(root / machine / f"{domain}_test" / name)
            shift = 0.9 * (label == "anomaly") + 0.5 * (domain == "target")
            rows.append((name, int(label == "anomaly"), domain, float(rng.normal() + shift)))
      truth[(machine, section)] = rows
  return truth


def _write_rows(path: pathlib.Path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  order = np.random.default_rng(len(rows)).permutation(len(rows))  # rows in no particular order
  path.write_text("".join(f"{rows[i][0]},{rows[i][1]!r}\n" for i in order))


def _write_scores_2020(sub: pathlib.Path, truth, official_names=True):
  for (machine, mid), rows in truth.items():
    name = (f"anomaly_score_{machine}_id_{mid}.csv" if official_names
            else f"anomaly_score_{machine}_section_{mid}_test.csv")
    _write_rows(sub / name, [(n, s) for n, _, s in rows])


def _write_scores_2021(sub: pathlib.Path, truth, threshold=0.5):
  for (machine, section), rows in truth.items():
    for domain in ("source", "target"):
      mine = [r for r in rows if r[2] == domain]
      _write_rows(sub / f"anomaly_score_{machine}_section_{section}_{domain}_test.csv", [(n, s) for n, _, _, s in mine])
      _write_rows(sub / f"decision_result_{machine}_section_{section}_{domain}_test.csv",
                  [(n, int(s > threshold)) for n, _, _, s in mine])


# ------------------------------------------------------------------------------------------------ protocol
def test_year_to_protocol_and_detection_from_names_and_layout():
  assert protocol_lib.for_year(2020) is Protocol.DCASE2020
  assert protocol_lib.for_year("2021") is Protocol.DCASE2021
  assert {protocol_lib.for_year(y) for y in range(2022, 2027)} == {Protocol.DCASE2022}
  assert protocol_lib.for_year("2022-2026") is Protocol.DCASE2022
  for bad in (2019, 2027, "twenty", ""):
    with pytest.raises(ValueError, match="expected a DCASE Task 2 year 2020-2026"):
      protocol_lib.for_year(bad)
  assert protocol_lib.detect(["/d/fan/test/normal_id_00_00000000.wav", "/d/fan/test/id_02_00000001.wav"]) \
      is Protocol.DCASE2020
  assert protocol_lib.detect(["/d/fan/source_test/section_00_source_test_normal_0000.wav"]) is Protocol.DCASE2021
  assert protocol_lib.detect(["/d/fan/test/section_00_source_test_normal_0000_a_1.wav"]) is Protocol.DCASE2022
  assert protocol_lib.detect([]) is Protocol.DCASE2022
  with pytest.raises(ValueError, match=r"mix the naming.*DCASE 2020 Task 2: /a/fan/test/normal_id_00_00000000.wav.*"
                                       r"DCASE 2022-2026 Task 2: /b/fan/test/section_00_0000.wav"):
    protocol_lib.detect(["/a/fan/test/normal_id_00_00000000.wav", "/b/fan/test/section_00_0000.wav"])
  # An explicit year wins over what the names say.
  assert protocol_lib.resolve(2021, ["/a/fan/test/normal_id_00_00000000.wav"]) is Protocol.DCASE2021


# ------------------------------------------------------------------------------------------------ hand-computed
# One section: (domain, label, score), as tests/test_evaluate.py's HAND.
HAND = [("source", "normal", 0.1), ("source", "normal", 0.4), ("source", "anomaly", 0.5),
        ("target", "normal", 0.2), ("target", "normal", 0.6), ("target", "anomaly", 0.3),
        ("target", "anomaly", 0.7)]


def _hand_arrays():
  labels = np.array([l == "anomaly" for _, l, _ in HAND], int)
  domains = np.array([d == "target" for d, _, _ in HAND], int)
  return labels, domains, np.array([s for *_, s in HAND])


def test_hand_computed_values_of_each_protocol():
  labels, domains, scores = _hand_arrays()
  # 2020: no domains. AUC: 4 normals {.1,.4,.2,.6} x 3 anomalies {.5,.3,.7}, 9 of 12 pairs right. pAUC: FPR moves in
  # steps of 1/4, so over [0, 0.1] the TPR is 1/3 (only .7 beats every normal): area 1/30, McClish-standardised
  # 0.5 (1 + (1/30 - 0.005) / (0.1 - 0.005)) = 37/57.
  s = metrics.section_metrics("fan", "00", labels, None, scores, protocol=Protocol.DCASE2020)
  assert (s.auc_all, s.pauc, s.auc_source, s.problem) == (pytest.approx(9 / 12), pytest.approx(37 / 57), None, None)
  # 2021: each domain alone. Source: normals {.1,.4} vs {.5}: AUC 1, and the anomaly beats both normals, so TPR 1 from
  # FPR 0: pAUC 1. Target: normals {.2,.6} vs {.3,.7}: 3 of 4 pairs; TPR 1/2 at FPR 0 (.7), steps of 1/2: area
  # 0.05, 0.5 (1 + 0.045 / 0.095) = 14/19.
  s = metrics.section_metrics("fan", "00", labels, domains, scores, protocol=Protocol.DCASE2021)
  assert (s.auc_source, s.pauc_source, s.auc_target, s.pauc_target) == pytest.approx((1.0, 1.0, 3 / 4, 14 / 19))
  assert s.pauc is None and s.problem is None
  e = metrics.summarize([s], protocol=Protocol.DCASE2021)
  assert e.official_score == pytest.approx(4 / (1 + 1 + 4 / 3 + 19 / 14))
  assert (e.auc, e.pauc) == pytest.approx(((1 + 3 / 4) / 2, (1 + 14 / 19) / 2))
  # 2022+: AUC (source) with all anomalies: {.1,.4} vs {.5,.3,.7}: 5 of 6; target {.2,.6} vs the same: 4 of 6.
  s = metrics.section_metrics("fan", "00", labels, domains, scores)
  assert (s.auc_source, s.auc_target, s.pauc) == pytest.approx((5 / 6, 4 / 6, 37 / 57))


# ------------------------------------------------------------------------------------------------ DCASE 2020
@pytest.mark.parametrize("official_names", [True, False])
def test_dcase2020_set_per_machine_id_matches_sklearn(tmp_path, official_names):
  truth = _make_2020(tmp_path / "dev", np.random.default_rng(0))
  _write_scores_2020(tmp_path / "sub", truth, official_names)
  e = official.evaluate_dataset(str(tmp_path / "sub"), str(tmp_path / "dev"))
  assert e.protocol is Protocol.DCASE2020 and e.n_evaluated == e.n_sections == 5 and e.warnings == ()
  expected = {}
  for (machine, mid), rows in truth.items():
    y, s = [l for _, l, _ in rows], [v for *_, v in rows]
    expected[(machine, mid)] = (roc_auc_score(y, s), roc_auc_score(y, s, max_fpr=0.1))
  got = {(r.machine, r.section): (r.auc_all, r.pauc) for r in e.sections}
  assert got.keys() == expected.keys()
  for key, values in expected.items():
    assert got[key] == pytest.approx(values, rel=REL), key
  for m in e.machines:  # the evaluator's "Average": the arithmetic mean over the machine's IDs
    mine = [v for (machine, _), v in expected.items() if machine == m.machine]
    assert (m.auc, m.pauc) == pytest.approx(tuple(np.mean(mine, axis=0)), rel=REL)
    assert m.auc_source is None and m.hmean is None
  per_type = [np.mean([v for (mm, _), v in expected.items() if mm == m], axis=0) for m in ("fan", "ToyCar")]
  assert (e.auc, e.pauc) == pytest.approx(tuple(np.mean(per_type, axis=0)), rel=REL)
  assert e.official_score is None and e.objective == pytest.approx(np.mean(per_type), rel=REL)
  recs = official.dataset_test_records(str(tmp_path / "dev"))
  by_name = {(m, n): v for (m, _), rows in truth.items() for n, _, v in rows}
  scores = np.array([by_name[(r.machine, os.path.basename(r.path))] for r in recs])
  assert official.official_score_objective(recs)(scores) == pytest.approx(e.objective, rel=REL)


def test_dcase2020_round_trip_through_the_year_s_own_submission_names(tmp_path):
  truth = _make_2020(tmp_path / "dev", np.random.default_rng(1), ids={"valve": ("00", "02")})
  recs = official.dataset_test_records(str(tmp_path / "dev"))
  by_name = {n: (l, v) for rows in truth.values() for n, l, v in rows}
  scores = np.array([by_name[os.path.basename(r.path)][1] for r in recs])
  written = files.write_submission(str(tmp_path / "sub"), recs, scores, (scores > 0.5).astype(int),
                                   protocol=Protocol.DCASE2020)
  assert sorted(os.path.basename(p) for p in written) == [
      "anomaly_score_valve_id_00.csv", "anomaly_score_valve_id_02.csv",
      "decision_result_valve_id_00.csv", "decision_result_valve_id_02.csv"]
  files.write_ground_truth(str(tmp_path / "gt"), recs)
  from_dataset = official.evaluate_dataset(str(tmp_path / "sub"), str(tmp_path / "dev"))
  from_truth = official.evaluate_dirs(str(tmp_path / "sub"), str(tmp_path / "gt"))  # 2020 from the clip names
  in_memory = official.evaluate_records(recs, scores)
  for e in (from_dataset, from_truth):
    assert e.protocol is Protocol.DCASE2020
    assert [(s.auc_all, s.pauc) for s in e.sections] == [(s.auc_all, s.pauc) for s in in_memory.sections]


def test_dcase2020_evaluation_names_hide_the_labels(tmp_path):
  for i in range(3):
    _touch(tmp_path / "eval" / "fan" / "test" / f"id_01_{i:08d}.wav")
  (tmp_path / "sub").mkdir()
  (tmp_path / "sub" / "anomaly_score_fan_id_01.csv").write_text("".join(f"id_01_{i:08d}.wav,{i}\n" for i in range(3)))
  e = official.evaluate_dataset(str(tmp_path / "sub"), str(tmp_path / "eval"))
  assert e.protocol is Protocol.DCASE2020 and e.n_evaluated == 0 and e.auc is None
  assert e.warnings == ("fan id_01: not evaluated: 3 of 3 test clips have no label (normal/anomaly), e.g. "
                        f"{tmp_path / 'eval' / 'fan' / 'test' / 'id_01_00000000.wav'}",)


def test_dcase2020_official_ground_truth_list_of_the_evaluation_set(tmp_path):
  # The 2020 evaluator's eval_data_list.csv: a machine type row, then `clip,<original name>,label` rows.
  rng = np.random.default_rng(9)
  rows = {("pump", mid): [(f"id_{mid}_{i:08d}.wav", int(i % 3 == 0), float(rng.normal() + (i % 3 == 0)))
                          for i in range(12)] for mid in ("01", "03")}
  lines = ["pump"] + [f"{n},{'anomaly' if l else 'normal'}_{n},{l}" for key in sorted(rows) for n, l, _ in rows[key]]
  (tmp_path / "eval_data_list.csv").write_text("\n".join(lines) + "\n")
  _write_scores_2020(tmp_path / "sub", rows)
  e = official.evaluate_dirs(str(tmp_path / "sub"), str(tmp_path / "eval_data_list.csv"))
  assert e.protocol is Protocol.DCASE2020 and [s.section for s in e.sections] == ["01", "03"]
  for s in e.sections:
    y, v = [l for _, l, _ in rows[("pump", s.section)]], [x for *_, x in rows[("pump", s.section)]]
    assert (s.auc_all, s.pauc) == pytest.approx((roc_auc_score(y, v), roc_auc_score(y, v, max_fpr=0.1)), rel=REL)
  (tmp_path / "eval_data_list.csv").write_text("pump\nid_01_00000000.wav,x,2\n")
  with pytest.raises(ValueError, match=r"eval_data_list.csv:2: expected 'clip.wav,<any>,0\|1', found "
                                       r"'id_01_00000000.wav,x,2'"):
    official.evaluate_dirs(str(tmp_path / "sub"), str(tmp_path / "eval_data_list.csv"))


# ------------------------------------------------------------------------------------------------ DCASE 2021
def _expected_2021(truth):
  """Per (machine, section, domain): AUC, pAUC, precision, recall, F1 over that domain's clips (decisions s > 0.5)."""
  out = {}
  for (machine, section), rows in truth.items():
    for domain in ("source", "target"):
      y = [l for _, l, d, _ in rows if d == domain]
      s = [v for _, _, d, v in rows if d == domain]
      dec = [int(v > 0.5) for v in s]
      p, r = precision_score(y, dec, zero_division=0), recall_score(y, dec, zero_division=0)
      f1 = 2 * p * r / max(p + r, EPS)
      out[(machine, section, domain)] = (roc_auc_score(y, s), roc_auc_score(y, s, max_fpr=0.1), p, r, f1)
  return out


def test_dcase2021_set_per_section_and_domain_matches_sklearn(tmp_path):
  truth = _make_2021(tmp_path / "dev", np.random.default_rng(2))
  _write_scores_2021(tmp_path / "sub", truth)
  e = official.evaluate_dataset(str(tmp_path / "sub"), str(tmp_path / "dev"))
  assert e.protocol is Protocol.DCASE2021 and e.n_evaluated == e.n_sections == 6 and e.warnings == ()
  expected = _expected_2021(truth)
  for s in e.sections:
    for domain in ("source", "target"):
      got = tuple(getattr(s, f"{m}_{domain}") for m in ("auc", "pauc", "precision", "recall", "f1"))
      assert got == pytest.approx(expected[(s.machine, s.section, domain)], rel=REL), (s.machine, s.section, domain)
    assert s.pauc is None
  aucs = [v[0] for v in expected.values()]
  paucs = [v[1] for v in expected.values()]
  # The evaluator's rows "over all machine types, sections, and domains" and the official score.
  assert (e.auc, e.pauc) == pytest.approx((np.mean(aucs), np.mean(paucs)), rel=REL)
  assert (e.hmean_auc, e.hmean_pauc) == pytest.approx((_hmean(aucs), _hmean(paucs)), rel=REL)
  assert e.official_score == pytest.approx(_hmean(aucs + paucs), rel=REL)
  assert e.arithmetic_mean == pytest.approx(np.mean(aucs + paucs), rel=REL)
  for m in e.machines:
    mine = [v for k, v in expected.items() if k[0] == m.machine]
    assert (m.auc, m.pauc) == pytest.approx(tuple(np.mean([v[:2] for v in mine], axis=0)), rel=REL)
    assert (m.hmean_auc, m.hmean_pauc) == pytest.approx((_hmean([v[0] for v in mine]), _hmean([v[1] for v in mine])),
                                                        rel=REL)
  recs = official.dataset_test_records(str(tmp_path / "dev"))
  by_name = {(m, n): v for (m, _), rows in truth.items() for n, _, _, v in rows}  # names repeat across machines
  scores = np.array([by_name[(r.machine, os.path.basename(r.path))] for r in recs])
  assert official.official_score_objective(recs)(scores) == pytest.approx(e.official_score, rel=REL)


def test_dcase2021_official_ground_truth_and_the_2022_rule_on_the_same_clips(tmp_path):
  truth = _make_2021(tmp_path / "dev", np.random.default_rng(3), sections=("00",), machines=("gearbox",))
  _write_scores_2021(tmp_path / "sub", truth)
  gt = tmp_path / "gt" / "ground_truth_data"
  gt.mkdir(parents=True)
  for domain in ("source", "target"):  # the 2021 evaluator's ground truth: one file per section and domain
    (gt / f"ground_truth_gearbox_section_00_{domain}_test.csv").write_text(
        "".join(f"{n},{l}\n" for n, l, d, _ in truth[("gearbox", "00")] if d == domain))
  from_gt = official.evaluate_dirs(str(tmp_path / "sub"), str(tmp_path / "gt"))
  from_names = official.evaluate_dataset(str(tmp_path / "sub"), str(tmp_path / "dev"))
  assert from_gt.protocol is Protocol.DCASE2021
  assert from_gt.to_json_dict() == from_names.to_json_dict()
  # --year=2022 on the same clips: AUC (source) over the source normal clips and the anomalous clips of both domains.
  rows = truth[("gearbox", "00")]
  later = official.evaluate_dataset(str(tmp_path / "sub"), str(tmp_path / "dev"), protocol=2024)
  assert later.protocol is Protocol.DCASE2022
  for domain in ("source", "target"):
    keep = [r for r in rows if r[2] == domain or r[1] == 1]
    assert getattr(later.sections[0], f"auc_{domain}") == pytest.approx(
        roc_auc_score([r[1] for r in keep], [r[3] for r in keep]), rel=REL)


def test_dcase2021_submission_is_written_per_domain(tmp_path):
  truth = _make_2021(tmp_path / "dev", np.random.default_rng(4), sections=("01",), machines=("pump",))
  recs = official.dataset_test_records(str(tmp_path / "dev"))
  by_name = {n: v for rows in truth.values() for n, _, _, v in rows}
  scores = np.array([by_name[os.path.basename(r.path)] for r in recs])
  written = files.write_submission(str(tmp_path / "sub"), recs, scores, (scores > 0.5).astype(int),
                                   protocol=Protocol.DCASE2021)
  assert sorted(os.path.basename(p) for p in written) == [
      f"{kind}_pump_section_01_{d}_test.csv" for kind in ("anomaly_score", "decision_result")
      for d in ("source", "target")]
  source_rows = (tmp_path / "sub" / "anomaly_score_pump_section_01_source_test.csv").read_text().splitlines()
  assert source_rows and all("_source_test_" in row for row in source_rows)
  e = official.evaluate_dataset(str(tmp_path / "sub"), str(tmp_path / "dev"))
  assert e.official_score == pytest.approx(official.evaluate_records(recs, scores, (scores > 0.5).astype(int))
                                           .official_score, rel=REL)
  no_domain = recs[:1] + [ClipRecord("/x/pump/test/section_01_0000.wav", "pump", "01", "test")]
  with pytest.raises(ValueError, match=r"/x/pump/test/section_01_0000.wav: the DCASE 2021 Task 2 files are per "
                                       r"domain, but the clip's domain is None"):
    files.write_submission(str(tmp_path / "bad"), no_domain, np.zeros(2), np.zeros(2, int),
                           protocol=Protocol.DCASE2021)


# ------------------------------------------------------------------------------------------------ blank rows
def _records_2022(rng, sections):
  """Records and scores; `sections` maps (machine, section) to {(domain, label): count}."""
  recs, scores = [], []
  for (machine, section), counts in sections.items():
    for (domain, label), n in counts.items():
      for i in range(n):
        recs.append(ClipRecord(f"/d/{machine}/test/section_{section}_{domain}_test_{label}_{i:04d}.wav", machine,
                               section, "test", domain, label))
        scores.append(rng.normal() + (label == "anomaly"))
  return recs, np.array(scores)


FULL = {("source", "normal"): 8, ("source", "anomaly"): 6, ("target", "normal"): 5, ("target", "anomaly"): 7}


def _sklearn_2022(recs, scores, machine, section):
  rows = [(r.domain, r.label == "anomaly", s) for r, s in zip(recs, scores) if (r.machine, r.section) == (machine,
                                                                                                         section)]
  out = []
  for d in ("source", "target"):
    keep = [(a, s) for dd, a, s in rows if dd == d or a]
    out.append(roc_auc_score([a for a, _ in keep], [s for _, s in keep]))
  return out + [roc_auc_score([a for _, a, _ in rows], [s for *_, s in rows], max_fpr=0.1)]


def test_sections_that_cannot_be_evaluated_are_blank_rows_with_one_warning_each():
  sections = {("fan", "00"): FULL,
              ("fan", "01"): {("source", "normal"): 4, ("target", "normal"): 3},  # only normal clips
              ("valve", "00"): {("source", "normal"): 6, ("source", "anomaly"): 5},  # no target domain (2020-like)
              ("valve", "01"): FULL}
  recs, scores = _records_2022(np.random.default_rng(5), sections)
  decisions = (scores > 0.5).astype(int)
  e = official.evaluate_records(recs, scores, decisions)
  assert e.protocol is Protocol.DCASE2022 and (e.n_evaluated, e.n_sections) == (2, 4)
  assert e.warnings == (
      "fan section 01: not evaluated: only normal clips (7): AUC and pAUC need normal and anomalous clips",
      "valve section 00: not evaluated: no target-domain normal clips: AUC (target) needs them")
  rows = {(s.machine, s.section): s for s in e.sections}
  assert rows[("fan", "01")].auc_source is None and rows[("fan", "01")].pauc is None
  # What can be computed is still shown: valve 00 has its AUC (source) and pAUC, and its precision (source).
  valve = [(r.label == "anomaly", s) for r, s in zip(recs, scores) if (r.machine, r.section) == ("valve", "00")]
  y, s = [a for a, _ in valve], [v for _, v in valve]  # all source domain: AUC (source) is the AUC of all clips
  assert [rows[("valve", "00")].auc_source, rows[("valve", "00")].pauc] == pytest.approx(
      [roc_auc_score(y, s), roc_auc_score(y, s, max_fpr=0.1)], rel=REL)
  assert rows[("valve", "00")].auc_target is None and rows[("valve", "00")].precision_target is None
  # Every summary is over the two evaluated sections only.
  values = {k: _sklearn_2022(recs, scores, *k) for k in (("fan", "00"), ("valve", "01"))}
  assert [rows[k].auc_source for k in values] == pytest.approx([v[0] for v in values.values()], rel=REL)
  flat = [v[i] for i in range(3) for v in values.values()]
  assert e.official_score == pytest.approx(_hmean(flat), rel=REL)
  assert e.hmean_auc_target == pytest.approx(_hmean([v[1] for v in values.values()]), rel=REL)
  fan = next(m for m in e.machines if m.machine == "fan")
  assert (fan.n_sections, fan.n_evaluated) == (2, 1)
  assert fan.hmean == pytest.approx(_hmean(values[("fan", "00")]), rel=REL)
  assert official.official_score_objective(recs)(scores) == pytest.approx(e.official_score, rel=REL)
  # Found up front from the labels and domains alone, worded as the evaluation's warnings.
  up_front = official.unevaluable_sections(recs)
  assert tuple(metrics.warning_line(Protocol.DCASE2022, *k, p) for k, p in up_front.items()) == e.warnings
  assert "Summary over 2 of 4 sections; left out (they cannot be evaluated, see the warnings): fan section 01, " \
         "valve section 00." in metrics.format_table(e)
  data = json.loads(json.dumps(e.to_json_dict()))  # JSON-safe: blanks are null
  assert data["n_evaluated"] == 2 and data["sections"][1]["auc_source"] is None
  assert data["sections"][1]["problem"].startswith("only normal clips")


def test_a_partly_labelled_set_evaluates_the_labelled_sections():
  recs, scores = _records_2022(np.random.default_rng(6), {("fan", "00"): FULL, ("fan", "01"): FULL})
  hidden = [ClipRecord(f"/e/fan/test/section_01_{i:04d}.wav", "fan", "01", "test") for i in range(2)]
  mixed = [r for r in recs if r.section == "00"] + [r for r in recs if r.section == "01"][:-2] + hidden
  e = official.evaluate_records(mixed, scores)
  assert (e.n_evaluated, e.n_sections) == (1, 2)
  assert e.warnings == ("fan section 01: not evaluated: 2 of 26 test clips have no label (normal/anomaly), e.g. "
                        "/e/fan/test/section_01_0000.wav; 2 of 26 test clips have no domain (source/target), e.g. "
                        "/e/fan/test/section_01_0000.wav",)
  assert e.official_score == pytest.approx(_hmean(_sklearn_2022(recs, scores, "fan", "00")), rel=REL)
  # A set with no labelled clip at all (an evaluation set) evaluates nothing, and says so for each section.
  nothing = official.evaluate_records(hidden, np.zeros(2))
  assert nothing.official_score is None and nothing.official_score_ci95 is None and len(nothing.warnings) == 1
  assert list(official.unevaluable_sections(mixed)) == [("fan", "01")]
  with pytest.raises(ValueError, match="no section can be evaluated:\n  fan section 01: 2 of 2 test clips have no"):
    official.official_score_objective(hidden)


# ------------------------------------------------------------------------------------------------ the CLI
# The 14 test clips of tests/real/dcase2023_dev (real DCASE 2023 dev names, 2 per machine type).
REAL_2023_TEST = {
    "ToyCar": ["section_00_source_test_normal_0028_car_C2_spd_34V_mic_1.wav",
               "section_00_source_test_normal_0029_car_C2_spd_34V_mic_1.wav"],
    "ToyTrain": ["section_00_target_test_anomaly_0015_car_A2_spd_6_mic_2.wav",
                 "section_00_target_test_normal_0049_car_E2_spd_9_mic_2.wav"],
    "bearing": ["section_00_source_test_normal_0022_vel_9_loc_A.wav",
                "section_00_target_test_anomaly_0021_vel_8_loc_G.wav"],
    "fan": ["section_00_source_test_anomaly_0022_m-n_W.wav", "section_00_target_test_normal_0021_m-n_Y.wav"],
    "gearbox": ["section_00_source_test_normal_0026_volt_1.5_wt_150.wav",
                "section_00_target_test_anomaly_0040_volt_1.5_wt_130.wav"],
    "slider": ["section_00_source_test_normal_0027_vel_730_ac_0.11.wav",
               "section_00_target_test_normal_0013_vel_620_ac_0.08.wav"],
    "valve": ["section_00_target_test_anomaly_0044_pat_03.wav", "section_00_target_test_normal_0044_pat_03.wav"],
}


def _run(*flags):
  return subprocess.run([sys.executable, "-m", "asd_jax.evaluate", *flags], cwd=REPO, capture_output=True, text=True)


def test_cli_on_the_real_2023_sample_names_warns_per_section_and_finishes(tmp_path):
  rng = np.random.default_rng(7)
  for machine, names in REAL_2023_TEST.items():
    for name in names:
      _touch(tmp_path / "dev" / machine / "test" / name)
    _write_rows(tmp_path / "sub" / f"anomaly_score_{machine}_section_00_test.csv", [(n, rng.normal()) for n in names])
    _write_rows(tmp_path / "sub" / f"decision_result_{machine}_section_00_test.csv", [(n, 0) for n in names])
  proc = _run(f"--scores={tmp_path / 'sub'}", f"--dataset={tmp_path / 'dev'}", f"--json={tmp_path / 'r.json'}")
  assert proc.returncode == 0, proc.stderr
  warnings = [l for l in proc.stderr.splitlines() if l.startswith("warning: ")]
  assert len(warnings) == 7 and [w.split()[1] for w in warnings] == sorted(REAL_2023_TEST)  # one each
  assert ("warning: bearing section 00: not evaluated: no target-domain normal clips: AUC (target) needs them"
          in warnings)
  assert "Summary over 0 of 7 sections" in proc.stdout and "no official score" in proc.stdout
  result = json.loads((tmp_path / "r.json").read_text())
  assert result["protocol"] == "2022-2026" and result["n_evaluated"] == 0 and result["official_score"] is None
  # The 2020 rule (no domains) can evaluate the five machine types that have both classes.
  proc = _run(f"--scores={tmp_path / 'sub'}", f"--dataset={tmp_path / 'dev'}", "--year=2020")
  assert proc.returncode == 0 and "Summary over 5 of 7 machine IDs" in proc.stdout
  assert proc.stderr.count("warning: ") == 2


def test_cli_evaluates_a_2020_dev_set_from_its_names(tmp_path):
  truth = _make_2020(tmp_path / "dev", np.random.default_rng(8), ids={"slider": ("00", "02")})
  _write_scores_2020(tmp_path / "sub", truth)
  proc = _run(f"--scores={tmp_path / 'sub'}", f"--dataset={tmp_path / 'dev'}", f"--json={tmp_path / 'r.json'}")
  assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
  assert proc.stdout.startswith("DCASE 2020 Task 2 protocol")
  for (machine, mid), rows in truth.items():
    y, s = [l for _, l, _ in rows], [v for *_, v in rows]
    assert (f"| {machine} | id_{mid} | {100 * roc_auc_score(y, s):.2f} | "
            f"{100 * roc_auc_score(y, s, max_fpr=0.1):.2f} |  |") in proc.stdout
  assert "All 2 machine IDs evaluated." in proc.stdout
  assert json.loads((tmp_path / "r.json").read_text())["protocol"] == "2020"


@pytest.mark.parametrize("flags, message", [
    (["--dataset=D", "--ground_truth=G"], "--scores and one of --dataset or --ground_truth are required"),
    (["--year=2019", "--dataset=D"], "error: year '2019': expected a DCASE Task 2 year 2020-2026"),
    (["--dataset=MISSING"], "error: 1 problem(s) in dataset MISSING:\n  MISSING: not a directory"),
])
def test_cli_refuses_bad_arguments(tmp_path, flags, message):
  flags = [f.replace("MISSING", str(tmp_path / "missing")) for f in flags]
  proc = _run(f"--scores={tmp_path}", *flags)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  assert message.replace("MISSING", str(tmp_path / "missing")) in proc.stderr


def test_dataset_names_that_no_scheme_matches_are_one_error_naming_them(tmp_path):
  _touch(tmp_path / "dev" / "fan" / "test" / "normal_id_00_00000000.wav")
  _touch(tmp_path / "dev" / "fan" / "test" / "recording 7.wav")
  _touch(tmp_path / "dev" / "pump" / "train" / "normal_id_00_00000000.wav")  # a machine without test clips: fine
  proc = _run(f"--scores={tmp_path}", f"--dataset={tmp_path / 'dev'}")
  assert proc.returncode == 1 and "Traceback" not in proc.stderr and proc.stdout == ""
  assert f"{tmp_path / 'dev' / 'fan' / 'test' / 'recording 7.wav'}: 'recording 7.wav' matches no DCASE naming" \
      in proc.stderr
  (tmp_path / "dev" / "fan" / "test" / "recording 7.wav").unlink()
  proc = _run(f"--scores={tmp_path}", f"--dataset={tmp_path / 'dev'}")  # no score file for fan id_00
  assert proc.returncode == 1 and f"error: missing file: {tmp_path / 'anomaly_score_fan_id_00.csv'}" in proc.stderr
