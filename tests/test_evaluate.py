"""Official DCASE Task 2 evaluation: hand-computed metrics, an independent scikit-learn
recomputation, official-style files and name mapping, the CLI, and every bad-input path."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from asd_jax.data.records import ClipRecord
from asd_jax.evaluation import files, metrics, official
from asd_jax.scoring import fusion

EPS = sys.float_info.epsilon
REPO = pathlib.Path(__file__).resolve().parents[1]

# One hand-made section: (domain, label, score).
HAND = [
    ("source", "normal", 0.1), ("source", "normal", 0.4), ("source", "anomaly", 0.5),
    ("target", "normal", 0.2), ("target", "normal", 0.6), ("target", "anomaly", 0.3),
    ("target", "anomaly", 0.7),
]
# AUC (source): normals {.1,.4} vs anomalies {.5,.3,.7}: 5 of 6 pairs ranked right.
# AUC (target): normals {.2,.6} vs the same anomalies: 4 of 6.
# pAUC: 4 normals, so FPR jumps by 1/4; over FPR [0, 0.1] the TPR is 1/3 (only 0.7 beats every
# normal): area 1/30; McClish standardisation 0.5 (1 + (1/30 - 0.005) / (0.1 - 0.005)) = 37/57.
HAND_AUC_S, HAND_AUC_T, HAND_PAUC = 5 / 6, 4 / 6, 37 / 57


def _hand_records(machine="fan", section="00"):
  return [ClipRecord(f"/d/{machine}/section_{section}_{d}_test_{l}_{i:04d}.wav", machine, section, "test", d, l)
          for i, (d, l, _) in enumerate(HAND)]


def test_hand_computed_section_metrics():
  recs = _hand_records()
  scores = np.array([s for _, _, s in HAND])
  decisions = (scores > 0.35).astype(int)
  e = official.evaluate_records(recs, scores, decisions)
  s = e.sections[0]
  assert s.auc_source == pytest.approx(HAND_AUC_S)
  assert s.auc_target == pytest.approx(HAND_AUC_T)
  assert s.pauc == pytest.approx(HAND_PAUC)
  assert s.auc_all == pytest.approx(9 / 12)  # 3 anomalies x 4 normals, 9 pairs right
  # source clips: decisions 0,1 on normals, 1 on the anomaly -> tp 1, fp 1, fn 0.
  assert (s.precision_source, s.recall_source, s.f1_source) == pytest.approx((0.5, 1.0, 2 / 3))
  # target clips: normals 0,1; anomalies 0,1 -> tp 1, fp 1, fn 1.
  assert (s.precision_target, s.recall_target, s.f1_target) == pytest.approx((0.5, 0.5, 0.5))
  expected = 3 / (1 / HAND_AUC_S + 1 / HAND_AUC_T + 1 / HAND_PAUC)
  assert e.official_score == pytest.approx(expected)
  assert e.machines[0].hmean == pytest.approx(expected)


def test_precision_with_no_positive_decision_uses_epsilon_floor():
  recs = _hand_records()
  e = official.evaluate_records(recs, np.arange(7.0), np.zeros(7, int))
  s = e.sections[0]
  assert s.precision_source == 0.0 and s.recall_source == 0.0 and s.f1_source == 0.0


def test_zero_auc_is_clipped_to_epsilon_in_the_harmonic_mean():
  recs = _hand_records()
  labels = np.array([l == "anomaly" for _, l, _ in HAND], float)
  e = official.evaluate_records(recs, -labels)  # every anomaly below every normal
  assert e.sections[0].auc_source == 0.0
  assert e.official_score == pytest.approx(scipy.stats.hmean(np.maximum([0.0, 0.0, e.sections[0].pauc], EPS)))
  assert e.official_score < 1e-14


def _random_records(seed=0, machines=("ToyCar", "fan", "valve"), sections=("00", "01")):
  rng = np.random.default_rng(seed)
  recs = []
  for m in machines:
    for sec in sections:
      for d, n_normal, n_anom in (("source", 9, 7), ("target", 5, 6)):
        for label, n in (("normal", n_normal), ("anomaly", n_anom)):
          recs += [ClipRecord(f"/d/{m}/section_{sec}_{d}_test_{label}_{i:04d}.wav", m, sec, "test", d, label)
                   for i in range(n)]
  order = rng.permutation(len(recs))
  recs = [recs[i] for i in order]
  labels = np.array([r.label == "anomaly" for r in recs])
  scores = rng.normal(size=len(recs)) + 0.8 * labels
  return recs, scores


def test_matches_an_independent_sklearn_computation():
  recs, scores = _random_records()
  decisions = (scores > 0.4).astype(int)
  e = official.evaluate_records(recs, scores, decisions)
  values, by_section = [], {}
  for r, s, dec in zip(recs, scores, decisions):
    by_section.setdefault((r.machine, r.section), []).append((r.domain, r.label == "anomaly", s, dec))
  for (m, sec), rows in sorted(by_section.items()):
    auc_s = roc_auc_score([a for d, a, _, _ in rows if d == "source" or a], [s for d, a, s, _ in rows if d == "source" or a])
    auc_t = roc_auc_score([a for d, a, _, _ in rows if d == "target" or a], [s for d, a, s, _ in rows if d == "target" or a])
    pauc = roc_auc_score([a for _, a, _, _ in rows], [s for _, _, s, _ in rows], max_fpr=0.1)
    got = next(x for x in e.sections if (x.machine, x.section) == (m, sec))
    assert (got.auc_source, got.auc_target, got.pauc) == pytest.approx((auc_s, auc_t, pauc))
    tgt = [(a, dec) for d, a, _, dec in rows if d == "target"]
    tp = sum(a and dec for a, dec in tgt)
    assert got.precision_target == pytest.approx(tp / sum(dec for _, dec in tgt))
    assert got.recall_target == pytest.approx(tp / sum(a for a, _ in tgt))
    values += [auc_s, auc_t, pauc]
  assert e.official_score == pytest.approx(len(values) / sum(1 / v for v in values))
  fan = next(m for m in e.machines if m.machine == "fan")
  fan_vals = [getattr(s, f) for f in ("auc_source", "auc_target", "pauc") for s in e.sections if s.machine == "fan"]
  assert fan.hmean == pytest.approx(scipy.stats.hmean(fan_vals))
  assert fan.auc_source == pytest.approx(np.mean([s.auc_source for s in e.sections if s.machine == "fan"]))
  assert official.official_score_objective(recs)(scores) == pytest.approx(e.official_score)
  table = metrics.format_table(e)
  assert "| fan |" in table and f"{100 * e.official_score:.2f}" in table


def test_files_round_trip_and_cli_json(tmp_path):
  recs, scores = _random_records(seed=1)
  decisions = (scores > 0.2).astype(int)
  files.write_submission(str(tmp_path / "sub"), recs, scores, decisions)
  files.write_ground_truth(str(tmp_path / "gt"), recs)
  from_files = official.evaluate_dirs(str(tmp_path / "sub"), str(tmp_path / "gt"))
  in_memory = official.evaluate_records(recs, scores, decisions)
  assert from_files.official_score == pytest.approx(in_memory.official_score)
  for a, b in zip(from_files.sections, in_memory.sections):
    assert (a.machine, a.section, a.auc_source, a.auc_target, a.pauc, a.f1_source, a.f1_target) == \
        (b.machine, b.section, pytest.approx(b.auc_source), pytest.approx(b.auc_target), pytest.approx(b.pauc),
         pytest.approx(b.f1_source), pytest.approx(b.f1_target))
  out = tmp_path / "result.json"
  proc = subprocess.run([sys.executable, "-m", "asd_jax.evaluate", f"--scores={tmp_path / 'sub'}",
                         f"--ground_truth={tmp_path / 'gt'}", f"--json={out}"],
                        cwd=REPO, capture_output=True, text=True, check=True)
  result = json.loads(out.read_text())
  assert result["official_score"] == pytest.approx(in_memory.official_score)
  assert {(s["machine"], s["section"]) for s in result["sections"]} == {
      (m, s) for m in ("ToyCar", "fan", "valve") for s in ("00", "01")}
  assert {"auc_source", "auc_target", "pauc", "precision_source", "f1_target"} <= set(result["sections"][0])
  assert "official score" in proc.stdout and "| valve |" in proc.stdout
  (tmp_path / "sub" / "decision_result_fan_section_01_test.csv").unlink()
  proc = subprocess.run([sys.executable, "-m", "asd_jax.evaluate", f"--scores={tmp_path / 'sub'}",
                         f"--ground_truth={tmp_path / 'gt'}"], cwd=REPO, capture_output=True, text=True)
  assert proc.returncode == 1
  assert "error: missing file:" in proc.stderr and "decision_result_fan_section_01_test.csv" in proc.stderr


def _official_layout(tmp_path, full_names_in_scores: bool):
  """A ground truth with short eval-style names plus attributes, and a matching submission."""
  gt, sub = tmp_path / "gt", tmp_path / "sub"
  for d in ("ground_truth_data", "ground_truth_domain", "ground_truth_attributes"):
    (gt / d).mkdir(parents=True)
  sub.mkdir()
  name = "ground_truth_fan_section_00_test.csv"
  shorts = [f"section_00_{i:04d}.wav" for i in range(len(HAND))]
  fulls = [f"section_00_{d}_test_{l}_{i:04d}_a_1" for i, (d, l, _) in enumerate(HAND)]
  order = [3, 0, 6, 1, 5, 2, 4]  # files in an arbitrary row order
  (gt / "ground_truth_data" / name).write_text("".join(f"{shorts[i]},{int(HAND[i][1] == 'anomaly')}\n" for i in order))
  (gt / "ground_truth_domain" / name).write_text("".join(f"{shorts[i]},{int(HAND[i][0] == 'target')}\n" for i in order))
  (gt / "ground_truth_attributes" / name).write_text("".join(f"{shorts[i]},{fulls[i]}\n" for i in order))
  names = [f"{f}.wav" for f in fulls] if full_names_in_scores else shorts
  (sub / "anomaly_score_fan_section_00_test.csv").write_text("".join(f"{names[i]},{HAND[i][2]}\n" for i in reversed(order)))
  (sub / "decision_result_fan_section_00_test.csv").write_text("".join(f"{names[i]},{int(HAND[i][2] > 0.35)}\n" for i in order))
  return sub, gt


@pytest.mark.parametrize("full_names", [False, True])
def test_official_layout_with_short_or_full_dev_names(tmp_path, full_names):
  sub, gt = _official_layout(tmp_path, full_names)
  e = official.evaluate_dirs(str(sub), str(gt))
  s = e.sections[0]
  assert (s.auc_source, s.auc_target, s.pauc) == pytest.approx((HAND_AUC_S, HAND_AUC_T, HAND_PAUC))
  assert (s.precision_target, s.recall_target) == pytest.approx((0.5, 0.5))


def _rewrite(path, transform):
  lines = path.read_text().splitlines()
  path.write_text("".join(l + "\n" for l in transform(lines)))


@pytest.mark.parametrize("case, pattern", [
    ("missing_score_file", r"missing file: .*anomaly_score_fan_section_00_test.csv"),
    ("missing_decision_file", r"missing file: .*decision_result_fan_section_00_test.csv"),
    ("missing_clip", r"anomaly_score_fan_section_00_test.csv: clips do not match.*6 rows, 7 expected.*1 missing \(section_00_0002.wav\)"),
    ("extra_clip", r"1 unexpected \(section_00_9999.wav\)"),
    ("duplicate_clip", r"anomaly_score_fan_section_00_test.csv: clip section_00_0003.wav listed twice \(lines 1 and 8\)"),
    ("non_numeric", r"anomaly_score_fan_section_00_test.csv:2: clip section_00_0000.wav: value 'abc' is not a number"),
    ("bad_decision", r"decision_result_fan_section_00_test.csv:1: clip section_00_0003.wav: expected 0 or 1, found '2'"),
    ("gt_mismatch", r"ground_truth_data/ground_truth_fan_section_00_test.csv and .*ground_truth_domain.* list different clips"),
    ("no_gt", r"has no ground_truth_data/ subfolder"),
    ("one_column", r"anomaly_score_fan_section_00_test.csv:1: expected 'clip,value'"),
    # A decimal comma would otherwise be read as the score -0.0 (the first two fields), with exit status 0.
    ("decimal_comma", r"anomaly_score_fan_section_00_test.csv:2: expected 'clip,value' \(2 fields\), found 3: "
                      r"'section_00_0000.wav,-0,695' \(a decimal comma\?"),
    ("extra_column", r"anomaly_score_fan_section_00_test.csv:3: expected 'clip,value' \(2 fields\), found 3"),
    ("binary_file", r"anomaly_score_fan_section_00_test.csv: not a UTF-8 text CSV file"),
    ("nul_byte", r"anomaly_score_fan_section_00_test.csv:1: clip section_00_0003.wav: value '0.5\\x00' is not a"),
])
def test_bad_inputs_name_the_file_and_clips(tmp_path, case, pattern):
  sub, gt = _official_layout(tmp_path, full_names_in_scores=False)
  score_file = sub / "anomaly_score_fan_section_00_test.csv"
  _rewrite(score_file, sorted)  # deterministic line numbers: section_00_0000 ... 0006
  _rewrite(sub / "decision_result_fan_section_00_test.csv", sorted)
  # Sorted, then 0003 moved first: lines hold 0003, 0000, 0001, 0002, 0004, 0005, 0006.
  _rewrite(score_file, lambda ls: [ls[3]] + ls[:3] + ls[4:])
  _rewrite(sub / "decision_result_fan_section_00_test.csv", lambda ls: [ls[3]] + ls[:3] + ls[4:])
  if case == "missing_score_file":
    score_file.unlink()
  elif case == "missing_decision_file":
    (sub / "decision_result_fan_section_00_test.csv").unlink()
  elif case == "missing_clip":
    _rewrite(score_file, lambda ls: [l for l in ls if not l.startswith("section_00_0002")])
  elif case == "extra_clip":
    _rewrite(score_file, lambda ls: ls + ["section_00_9999.wav,0.5"])
  elif case == "duplicate_clip":
    _rewrite(score_file, lambda ls: ls + [ls[0]])
  elif case == "non_numeric":
    _rewrite(score_file, lambda ls: [ls[0], ls[1].split(",")[0] + ",abc"] + ls[2:])
  elif case == "bad_decision":
    _rewrite(sub / "decision_result_fan_section_00_test.csv", lambda ls: [ls[0].split(",")[0] + ",2"] + ls[1:])
  elif case == "gt_mismatch":
    _rewrite(gt / "ground_truth_domain" / "ground_truth_fan_section_00_test.csv", lambda ls: ls[:-1])
  elif case == "no_gt":
    gt = tmp_path / "nowhere"
  elif case == "one_column":
    _rewrite(score_file, lambda ls: [ls[0].split(",")[0]] + ls[1:])
  elif case == "decimal_comma":
    _rewrite(score_file, lambda ls: [ls[0], ls[1].split(",")[0] + ",-0,695"] + ls[2:])
  elif case == "extra_column":
    _rewrite(score_file, lambda ls: ls[:2] + [ls[2] + ",extra"] + ls[3:])
  elif case == "binary_file":
    score_file.write_bytes(bytes(range(256)) * 4)
  elif case == "nul_byte":
    score_file.write_bytes(b"section_00_0003.wav,0.5\x00\n")
  with pytest.raises((ValueError, FileNotFoundError), match=pattern):
    official.evaluate_dirs(str(sub), str(gt))


def test_record_input_errors():
  recs = _hand_records()
  scores = np.arange(7.0)
  with pytest.raises(ValueError, match=r"7 records but scores of shape \(6,\)"):
    official.evaluate_records(recs, scores[:6])
  with pytest.raises(ValueError, match=r"7 records but decisions of shape \(5,\)"):
    official.evaluate_records(recs, scores, np.zeros(5, int))
  bad = np.array(scores)
  bad[2] = np.nan
  with pytest.raises(ValueError, match=r"non-finite scores for clips \['/d/fan/section_00_source_test_anomaly_0002.wav'\]"):
    official.evaluate_records(recs, bad)
  with pytest.raises(ValueError, match="duplicate clips"):
    official.evaluate_records(recs + recs[:1], np.arange(8.0))
  with pytest.raises(ValueError, match="decisions must be 0 or 1"):
    official.evaluate_records(recs, scores, np.full(7, 3))


def test_write_submission_files_and_errors(tmp_path):
  recs = _hand_records() + _hand_records("valve", "01")
  scores = np.linspace(0, 1, len(recs))
  paths = files.write_submission(str(tmp_path), recs, scores, (scores > 0.5).astype(int))
  assert sorted(os.path.basename(p) for p in paths) == [
      "anomaly_score_fan_section_00_test.csv", "anomaly_score_valve_section_01_test.csv",
      "decision_result_fan_section_00_test.csv", "decision_result_valve_section_01_test.csv"]
  rows = (tmp_path / "anomaly_score_valve_section_01_test.csv").read_text().splitlines()
  assert rows[0] == f"section_01_source_test_normal_0000.wav,{float(scores[7])!r}"
  with pytest.raises(ValueError, match="duplicate clip names"):
    files.write_submission(str(tmp_path), recs[:2] + recs[:1], scores[:3], np.zeros(3, int))
  with pytest.raises(ValueError, match="decisions must be 0 or 1"):
    files.write_submission(str(tmp_path), recs, scores, np.full(len(recs), 2))


def test_grid_search_with_the_official_score_finds_the_informative_model():
  recs, _ = _random_records(seed=2)
  labels = np.array([r.label == "anomaly" for r in recs], float)
  rng = np.random.default_rng(0)
  models = np.stack([rng.normal(size=len(recs)), labels + 0.01 * rng.normal(size=len(recs)), -labels])
  objective = official.official_score_objective(recs)
  best, value, values = fusion.grid_search(models, objective, step=0.25)
  assert value == pytest.approx(1.0)
  assert objective(fusion.fuse(models, best)) == pytest.approx(1.0)
  assert best[1] > best[2]
  # The inverted model has AUC 0 everywhere (clipped to epsilon) and the least standardised
  # pAUC, 0.5 (1 - 0.005 / 0.095) = 9/19, in each of the 6 sections.
  assert objective(models[2]) == pytest.approx(metrics.hmean_clipped([0.0] * 12 + [9 / 19] * 6))


@pytest.mark.parametrize("seed", range(6))
def test_fast_auc_equals_sklearn_including_ties(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(5, 300))
  labels = rng.integers(0, 2, n)
  labels[:2] = [0, 1]
  scores = rng.normal(size=n) + labels
  if seed % 2:
    scores = np.round(scores, 1)  # many ties
  for max_fpr in (None, 0.1, 0.37):
    assert metrics.fast_auc(labels, scores, max_fpr) == pytest.approx(
        roc_auc_score(labels, scores, max_fpr=max_fpr), abs=1e-12)
  hand = [l for _, l, _ in HAND]
  assert metrics.fast_auc(np.array([x == "anomaly" for x in hand], int), np.array([s for *_, s in HAND]), 0.1) == \
      pytest.approx(HAND_PAUC)


def test_jackknife_of_the_mean_has_the_official_closed_form():
  # For the mean, theta_i - mean(theta_i) = -(x_i - mean x) / (n - 1): the official half-width is the
  # t-interval of the mean divided by n - 1, and the estimate is the mean itself.
  x = np.random.default_rng(0).normal(size=20)
  estimate, half_width = metrics.jackknife(np.mean, x)
  n = x.size
  assert estimate == pytest.approx(x.mean())
  t = scipy.stats.t.ppf(0.975, n - 1)
  assert half_width == pytest.approx(t * x.std(ddof=1) / np.sqrt(n) / (n - 1))


def test_official_score_ci95_matches_a_direct_sklearn_loop():
  rng = np.random.default_rng(3)
  labels = (rng.random(60) < 0.4).astype(int)
  scores = np.round(rng.normal(size=60) + labels, 1)  # rounded: ties, as with real scores
  half_widths = []
  for max_fpr in (None, 0.1):
    full = roc_auc_score(labels, scores, max_fpr=max_fpr)
    loo = np.array([roc_auc_score(np.delete(labels, i), np.delete(scores, i), max_fpr=max_fpr)
                    for i in range(labels.size)])
    pseudo = labels.size * full - (labels.size - 1) * loo
    assert metrics.jackknife(lambda y, s, m=max_fpr: metrics.fast_auc(y, s, m), labels, scores)[0] == \
        pytest.approx(pseudo.mean())
    spread = np.sqrt(np.sum((loo - loo.mean()) ** 2) / (labels.size * (labels.size - 1)))
    half_widths.append(scipy.stats.t.ppf(0.975, labels.size - 1) * spread)
  assert metrics.official_score_ci95(labels, scores) == pytest.approx(np.mean(half_widths))
  assert metrics.official_score_ci95(np.array([0, 0, 1]), np.array([0.1, 0.2, 0.3])) is None  # one anomaly


def test_evaluations_report_the_ci_of_all_clips_pooled(tmp_path):
  recs, scores = _random_records(seed=2)
  decisions = (scores > 0.2).astype(int)
  labels = np.array([r.label == "anomaly" for r in recs], int)
  expected = metrics.official_score_ci95(labels, scores)  # pooling is order-free
  assert 0 < expected < 0.1
  assert official.evaluate_records(recs, scores, decisions).official_score_ci95 == pytest.approx(expected)
  files.write_submission(str(tmp_path / "sub"), recs, scores, decisions)
  files.write_ground_truth(str(tmp_path / "gt"), recs)
  from_files = official.evaluate_dirs(str(tmp_path / "sub"), str(tmp_path / "gt"))
  assert from_files.official_score_ci95 == pytest.approx(expected, rel=1e-6)
  assert from_files.to_json_dict()["official_score_ci95"] == from_files.official_score_ci95


def test_cli_refuses_a_decimal_comma_and_an_unwritable_json_before_any_table(tmp_path):
  recs, scores = _random_records(seed=2)
  files.write_submission(str(tmp_path / "sub"), recs, scores, (scores > 0.2).astype(int))
  files.write_ground_truth(str(tmp_path / "gt"), recs)

  def run(*flags):
    return subprocess.run([sys.executable, "-m", "asd_jax.evaluate", f"--scores={tmp_path / 'sub'}",
                           f"--ground_truth={tmp_path / 'gt'}", *flags], cwd=REPO, capture_output=True, text=True)

  for json_path, why in ((tmp_path / "absent" / "r.json", "does not exist"), (tmp_path / "sub", "is a directory")):
    proc = run(f"--json={json_path}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: --json={json_path}: ") and why in proc.stderr
    assert proc.stdout == ""  # refused before the (long) evaluation and its tables
  assert not (tmp_path / "absent").exists()
  score_file = tmp_path / "sub" / "anomaly_score_fan_section_00_test.csv"
  lines = score_file.read_text().splitlines()
  score_file.write_text("\n".join(lines[:1] + [lines[1].split(",")[0] + ",-0,695"] + lines[2:]) + "\n")
  proc = run(f"--json={tmp_path / 'r.json'}")
  assert proc.returncode == 1 and "Traceback" not in proc.stderr and proc.stdout == ""
  assert f"error: {score_file}:2: expected 'clip,value' (2 fields), found 3" in proc.stderr
  assert not (tmp_path / "r.json").exists() and not list(tmp_path.glob(".*.tmp-*"))
