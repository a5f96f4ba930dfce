"""The pipeline on every year's layout, evaluated by that year's protocol, and on sets it can evaluate only in part or
not at all: the outputs are written, a section that cannot be evaluated is warned about once, before any compute,
and is a blank row.

Cheap: the only model is the non-learned log-mel reference row (no training, no JAX network), fused alone into one
system, so that submissions and a detector are written too. The per-ID and per-section figures are checked against
scikit-learn on the scores of the submission files, read here with `csv`, and the labels read from the file names
here, not through the library.
"""

import csv
import json
import os
import pathlib
import shutil

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from asd_jax import pipeline
from asd_jax.data import synth_past
from asd_jax.evaluation import official
from asd_jax.evaluation.protocol import Protocol
from asd_jax.pipeline import stages
from configs import pipeline_base

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
LOG_MEL = "log-mel mean/std (not learned)"


def log_mel_config(root, clip_seconds=1.0):
  """The log-mel reference row alone, fused with weight 1 into a system "mel" (exported as the detector)."""
  c = pipeline_base.get_config()
  c.data.root = str(root)
  c.model_keys = "log_mel"
  c.models.log_mel.frozen.data.clip_seconds = clip_seconds
  c.system_models = [LOG_MEL]
  c.systems = {"mel": [1.0]}
  c.system = "mel"
  return c


def submission_scores(folder):
  """{(machine, section): {clip name: score}} from the submission's anomaly-score CSVs (2022+ names)."""
  out = {}
  for name in sorted(os.listdir(folder)):
    if name.startswith("anomaly_score_"):
      machine, section = name[len("anomaly_score_"):-len("_test.csv")].rsplit("_section_", 1)
      with open(os.path.join(folder, name)) as f:
        out[(machine, section)] = {row[0]: float(row[1]) for row in csv.reader(f)}
  return out


def label_of(name):
  """1 for an anomalous clip, from its name (2020: `anomaly_id_...`, later: `..._anomaly_...`)."""
  return int(name.startswith("anomaly_") or "_anomaly_" in name)


def section_json(evaluation, machine, section):
  return next(s for s in evaluation["sections"] if (s["machine"], s["section"]) == (machine, section))


@pytest.fixture(scope="module")
def dcase2020(tmp_path_factory):
  """pump (IDs 00, 02) and ToyConveyor (IDs 01, 02) in the 2020 dev layout; ToyConveyor id_02 keeps only its
  normal test clips, so it cannot be evaluated."""
  out = tmp_path_factory.mktemp("dcase2020")
  synth_past.generate(out, machines=("pump", "ToyConveyor"), duration=1.0, train=10)
  root = out / "dcase2020"
  for clip in (root / "ToyConveyor" / "test").glob("anomaly_id_02_*.wav"):
    clip.unlink()
  return root


@pytest.fixture(scope="module")
def run_2020(dcase2020, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("work2020")
  return workdir, pipeline.run(log_mel_config(dcase2020), str(workdir), progress=False)


def test_a_2020_set_is_evaluated_per_machine_id_as_sklearn_computes_it(run_2020):
  workdir, result = run_2020
  assert result.protocol is Protocol.DCASE2020
  saved = json.loads((workdir / "results.json").read_text())
  assert saved["protocol"] == "2020" and saved["labelled"]
  for evaluation in (saved["models"]["log_mel"]["evaluation"], saved["systems"]["mel"]["evaluation"]):
    assert evaluation["protocol"] == "2020" and evaluation["official_score"] is None  # 2020 has none
  scores = submission_scores(workdir / "submissions" / "mel")
  assert sorted(scores) == [("ToyConveyor", "01"), ("ToyConveyor", "02"), ("pump", "00"), ("pump", "02")]
  by_machine = {}
  for (machine, section), clips in scores.items():
    labels = np.array([label_of(n) for n in clips])
    values = np.array(list(clips.values()))
    row = section_json(saved["systems"]["mel"]["evaluation"], machine, section)
    if (machine, section) == ("ToyConveyor", "02"):
      assert labels.tolist() == [0, 0] and row["auc_all"] is None and row["pauc"] is None and row["problem"]
      continue
    auc = sk_metrics.roc_auc_score(labels, values)
    pauc = sk_metrics.roc_auc_score(labels, values, max_fpr=0.1)
    assert row["auc_all"] == pytest.approx(auc, abs=1e-12) and row["pauc"] == pytest.approx(pauc, abs=1e-12)
    assert row["auc_source"] is None and row["auc_target"] is None  # no domains in 2020
    by_machine.setdefault(machine, []).append((auc, pauc))
  # Per machine type the mean over its evaluated IDs; overall the mean over machine types (the 2020 evaluator).
  machines = {m["machine"]: m for m in saved["systems"]["mel"]["evaluation"]["machines"]}
  for machine, values in by_machine.items():
    assert machines[machine]["auc"] == pytest.approx(np.mean([a for a, _ in values]), abs=1e-12)
    assert machines[machine]["pauc"] == pytest.approx(np.mean([p for _, p in values]), abs=1e-12)
  assert machines["ToyConveyor"]["n_evaluated"] == 1 and machines["ToyConveyor"]["n_sections"] == 2
  system = result.systems["mel"].evaluation
  assert system.auc == pytest.approx(np.mean([np.mean([a for a, _ in v]) for v in by_machine.values()]), abs=1e-12)
  # The one model fused with weight 1 is its own system: the same numbers.
  assert result.models["log_mel"].evaluation.auc == pytest.approx(system.auc, abs=1e-12)


def test_a_2020_section_that_cannot_be_evaluated_is_one_warning_and_a_blank_row(run_2020):
  workdir, result = run_2020
  assert result.warnings == ["ToyConveyor id_02: not evaluated: only normal clips (2): AUC and pAUC need normal "
                             "and anomalous clips"]
  saved = json.loads((workdir / "results.json").read_text())
  assert saved["warnings"] == result.warnings
  tables = (workdir / "tables.md").read_text()
  assert "Table 1: AUC / pAUC per machine type, means over its machine IDs (%)" in tables
  e = result.models["log_mel"].evaluation
  cells = {m.machine: f"{100 * m.auc:.2f} / {100 * m.pauc:.2f}" for m in e.machines}
  row = next(line for line in tables.splitlines() if line.startswith(f"| {LOG_MEL} |"))
  assert row == (f"| {LOG_MEL} | {cells['ToyConveyor']} | {cells['pump']} | {100 * e.auc:.2f} / {100 * e.pauc:.2f} |")
  assert "Summary over 3 of 4 machine IDs; left out (they cannot be evaluated, see the warnings): ToyConveyor id_02." \
      in tables
  header = next(line for line in tables.splitlines() if line.startswith("| system |"))
  assert header == "| system | AUC (mean) | pAUC (mean) | (AUC + pAUC) / 2 | weights |"
  assert os.path.isfile(workdir / "detector" / "detector.json")


def test_the_unevaluable_sections_are_warned_about_before_any_compute(dcase2020, tmp_path, monkeypatch, capsys):
  def stop(*args, **kwargs):
    raise RuntimeError("compute reached")

  monkeypatch.setattr(stages, "train_and_embed", stop)
  with pytest.raises(RuntimeError, match="compute reached"):
    pipeline.run(log_mel_config(dcase2020), str(tmp_path / "work"), progress=False)
  assert capsys.readouterr().err.count("warning: ToyConveyor id_02: not evaluated: only normal clips (2)") == 1


@pytest.fixture(scope="module")
def dcase2021(tmp_path_factory):
  """ToyDrone and shaker in the 2021 dev layout: test clips in source_test/ and target_test/ (from the synthetic 2023
  layout, names unchanged); shaker keeps only the normal clips of its target domain, so it cannot be evaluated."""
  out = tmp_path_factory.mktemp("dcase2021")
  synth_past.generate(out, machines=("ToyDrone", "shaker"), duration=1.0, train=10)
  for name in ("ToyDrone", "shaker"):
    machine = out / "dcase2023" / name
    for domain in ("source", "target"):
      (machine / f"{domain}_test").mkdir()
      for clip in (machine / "test").glob(f"section_00_{domain}_test_*.wav"):
        shutil.move(clip, machine / f"{domain}_test" / clip.name)
    (machine / "test").rmdir()
  for clip in (out / "dcase2023" / "shaker" / "target_test").glob("*_anomaly_*.wav"):
    clip.unlink()
  return out / "dcase2023"


def test_a_2021_set_is_evaluated_per_section_and_domain_as_sklearn_computes_it(dcase2021, tmp_path):
  result = pipeline.run(log_mel_config(dcase2021), str(tmp_path / "work"), progress=False)
  assert result.protocol is Protocol.DCASE2021
  assert result.warnings == ["shaker section 00: not evaluated: target domain: only normal clips (2)"]
  saved = json.loads((tmp_path / "work" / "results.json").read_text())
  scores = submission_scores(tmp_path / "work" / "submissions" / "mel")
  clips = scores[("ToyDrone", "00")]
  row = section_json(saved["systems"]["mel"]["evaluation"], "ToyDrone", "00")
  values = []
  for domain in ("source", "target"):
    mine = {n: s for n, s in clips.items() if f"_{domain}_test_" in n}
    labels, s = np.array([label_of(n) for n in mine]), np.array(list(mine.values()))
    assert sorted(labels.tolist()) == [0, 0, 1, 1]
    auc, pauc = sk_metrics.roc_auc_score(labels, s), sk_metrics.roc_auc_score(labels, s, max_fpr=0.1)
    assert row[f"auc_{domain}"] == pytest.approx(auc, abs=1e-12)
    assert row[f"pauc_{domain}"] == pytest.approx(pauc, abs=1e-12)
    values += [auc, pauc]
  # shaker: its source domain is computed, its target domain is not, and the section is left out of every mean.
  shaker = section_json(saved["systems"]["mel"]["evaluation"], "shaker", "00")
  source = {n: s for n, s in scores[("shaker", "00")].items() if "_source_test_" in n}
  assert shaker["auc_source"] == pytest.approx(
      sk_metrics.roc_auc_score([label_of(n) for n in source], list(source.values())), abs=1e-12)
  assert shaker["auc_target"] is None and shaker["pauc_target"] is None and shaker["problem"]
  # 2021's official score: the harmonic mean of every AUC and pAUC (each floored at machine epsilon), over the
  # sections it can evaluate (ToyDrone's alone).
  hmean = len(values) / sum(1 / max(v, np.finfo(float).eps) for v in values)
  assert saved["systems"]["mel"]["evaluation"]["official_score"] == pytest.approx(hmean, abs=1e-12)
  header = next(line for line in result.tables.splitlines() if line.startswith("| system |"))
  assert header == "| system | AUC (h-mean) | pAUC (h-mean) | official score | weights |"
  row = next(line for line in result.tables.splitlines() if line.startswith(f"| {LOG_MEL} |"))
  assert row == f"| {LOG_MEL} | {100 * hmean:.2f} | - | {100 * hmean:.2f} |"  # ToyDrone, shaker (blank), score
  assert len(os.listdir(tmp_path / "work" / "submissions" / "mel")) == 4  # both machine types' scores and decisions


def test_a_set_with_no_evaluable_section_still_writes_every_output(tmp_path):
  """The 28 real DCASE 2023 clips: two test clips per machine type, never a normal and an anomalous one of one
  domain, so under the 2023 rules no section can be evaluated; and two training clips per section."""
  root = REPO_ROOT / "tests" / "real" / "dcase2023_dev"
  result = pipeline.run(log_mel_config(root, clip_seconds=10.0), str(tmp_path / "work"), progress=False)
  machines = ("ToyCar", "ToyTrain", "bearing", "fan", "gearbox", "slider", "valve")
  not_evaluated = [w for w in result.warnings if "not evaluated" in w]
  assert [w.split(":")[0] for w in not_evaluated] == [f"{m} section 00" for m in machines]
  assert [w.split(":")[0] for w in result.warnings if "normalisation" in w] == [f"{m} section 00" for m in machines]
  assert all("rests on 2 normal training clip(s), fewer than 10" in w for w in result.warnings if "normalisation" in w)
  saved = json.loads((tmp_path / "work" / "results.json").read_text())
  assert not saved["labelled"] and saved["models"]["log_mel"]["evaluation"] is None
  assert "(no section can be evaluated, see the warnings" in result.tables
  row = next(line for line in result.tables.splitlines() if line.startswith("| mel |"))
  assert row == f"| mel | - | - | - | - | {LOG_MEL} 1.00 |"
  assert len(os.listdir(tmp_path / "work" / "submissions" / "mel")) == 14
  assert os.path.isfile(tmp_path / "work" / "detector" / "detector.json")
  # The same submission under the 2020 rules (no domains, as README's "Using it on real data" says): the five machine
  # types whose two test clips are one normal and one anomalous clip are evaluated, as sklearn computes them.
  scores = submission_scores(tmp_path / "work" / "submissions" / "mel")
  evaluation = official.evaluate_dataset(str(tmp_path / "work" / "submissions" / "mel"), str(root), protocol=2020)
  assert evaluation.n_evaluated == 5
  for s in evaluation.sections:
    labels = [label_of(n) for n in scores[(s.machine, s.section)]]
    if sorted(labels) != [0, 1]:
      assert s.machine in ("ToyCar", "slider") and not s.evaluated
      continue
    expected = sk_metrics.roc_auc_score(labels, list(scores[(s.machine, s.section)].values()))
    assert s.auc_all == pytest.approx(expected, abs=1e-12), s.machine


def test_the_report_of_a_2020_workdir_shows_the_year_s_figures_and_blank_ids(run_2020):
  pytest.importorskip("matplotlib")
  from asd_jax.report import build
  workdir, result = run_2020
  report = build.write_report(str(workdir), embedding_maps=False)
  system = result.systems["mel"].evaluation
  for s in system.sections:
    shown = report.metrics.get(("mel", s.machine, s.section))
    if not s.evaluated:
      assert shown is None
      continue
    assert shown == {"auc_all": s.auc_all, "pauc": s.pauc}  # the pipeline's numbers, the 2020 evaluator's fields
  assert any(n.startswith("ToyConveyor id_02: not evaluated (only normal clips (2)") for n in report.notes)
  page = pathlib.Path(report.index).read_text()
  assert "roc_pump_00.png" in page and "roc_ToyConveyor_02.png" not in page
