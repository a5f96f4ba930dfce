"""The report of a real (tiny) pipeline run: written by the CLI, every figure a PNG, the numbers the tables'.

The run and the report are built once (`report_run` in conftest.py).
"""

import html.parser
import json
import os

import numpy as np
import pytest

from asd_jax.data import records as records_lib
from asd_jax.evaluation import metrics
from asd_jax.report import collect
from asd_jax.report import histograms
from asd_jax.scoring import fusion
from asd_jax.scoring import threshold



class _MetricCells(html.parser.HTMLParser):
  """Collects the `data-*` attributes of every `<td class="metric">` and the `src` of every `<img>`."""

  def __init__(self):
    super().__init__()
    self.cells, self.images = [], []

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == "td" and attrs.get("class") == "metric":
      self.cells.append(attrs)
    if tag == "img":
      self.images.append(attrs)


def _page(workdir):
  parser = _MetricCells()
  text = (workdir / "report" / "index.html").read_text(encoding="utf-8")
  parser.feed(text)
  return text, parser


def _sections(result):
  """{(machine, section): test-clip indices} of the run, and per clip label / domain arrays."""
  records = result.test_records
  labels = np.array([r.label == "anomaly" for r in records], np.int64)
  domains = np.array([r.domain == "target" for r in records], np.int64)
  return records_lib.group_by_section(records), labels, domains


def test_the_cli_writes_the_page_and_every_figure_as_a_png(report_run, check_png):
  _, workdir, result, stdout = report_run
  figures = sorted((workdir / "report" / "figures").iterdir())
  names = [f.name for f in figures]
  # Per section: ROC and histograms; per model: an embedding map of both sections; one training log (FBEATs).
  expected = {f"{kind}_{m}_00.png" for kind in ("roc", "scores") for m in ("fan", "valve")}
  expected |= {f"embedding_{k}.png" for k in ("fbeats", "fusion")}
  expected |= {"curves_models_fbeats.png"}
  assert set(names) == expected, names
  for f in figures:
    check_png(f.read_bytes(), f.name)
  assert f"{len(expected)} figures" in stdout
  text, page = _page(workdir)
  assert len(page.images) == len(expected)
  for img in page.images:  # embedded: the page is one file
    assert img["src"].startswith("data:image/png;base64,") and img["alt"]
  for name in ("Table 1", "Table 3", "FBEATs", "Fusion", "system1", "Wall time", "Versions", "jax", "Embedding maps"):
    assert name in text, name


def test_the_aucs_in_the_page_are_the_metrics_modules(report_run):
  _, workdir, result, _ = report_run
  _, page = _page(workdir)
  shown = {(c["data-scorer"], c["data-machine"], c["data-section"], c["data-metric"]): float(c["data-value"])
           for c in page.cells}
  groups, labels, domains = _sections(result)
  scores = {k: m.scores.scores.normalized for k, m in result.models.items()}
  scores.update({n: s.fused.scores for n, s in result.systems.items() if s.fused is not None})
  evaluations = {k: m.evaluation for k, m in result.models.items()}
  evaluations.update({n: s.evaluation for n, s in result.systems.items() if s.fused is not None})
  assert len(shown) == 3 * len(groups) * len(scores)
  for key, values in scores.items():
    for (machine, section), idx in groups.items():
      # The pipeline's own in-memory scores through the official-evaluator module: the same function on the
      # same float64 arrays as the page (the page's `repr` keeps every bit), so equal, not close.
      expected = metrics.section_metrics(machine, section, labels[idx], domains[idx], values[idx])
      table = next(s for s in evaluations[key].sections if (s.machine, s.section) == (machine, section))
      for field in ("auc_source", "auc_target", "pauc"):
        assert shown[(key, machine, section, field)] == getattr(expected, field), (key, machine, field)
        assert getattr(table, field) == getattr(expected, field)  # and the numbers behind Tables 1 and 3


def test_the_reader_rebuilds_the_systems_thresholds_and_training_scores(report_run):
  config, workdir, result, _ = report_run
  wd = collect.read(str(workdir))
  assert [s.key for s in wd.models] == ["fbeats", "fusion"]
  assert [s.key for s in wd.systems] == [n for n, s in result.systems.items() if s.fused is not None]
  assert not wd.notes
  for s in wd.sections:
    for name in (x.key for x in wd.systems):
      fused = result.systems[name].fused
      assert s.thresholds[name] == fused.thresholds[(s.machine, s.section)]
      # The fused training scores are the ones the threshold was fitted on.
      assert threshold.fit_threshold(s.train_scores[name], method=config.threshold_method,
                                     quantile=config.threshold_quantile) == s.thresholds[name]
    assert s.labelled and set(np.unique(s.train_domains)) == {0, 1}
  assert [r.model_key for r in wd.logs] == ["fbeats"] and wd.logs[0].kind == "fine-tuning"


def test_embedding_points_are_the_scorers_bank_and_test_vectors(report_run):
  _, workdir, result, _ = report_run
  wd = collect.read(str(workdir))
  points = collect.embedding_points(wd, "fbeats")
  scorer = result.models["fbeats"].scorer
  groups, labels, _ = _sections(result)
  for key, p in points.items():
    state = scorer.sections[key]
    n_bank = len(state.bank)
    np.testing.assert_array_equal(p.vectors[:n_bank], state.bank)
    assert (p.role[:n_bank] == 1).sum() == state.bank_synthetic.sum() > 0  # the SMOTE samples are marked
    np.testing.assert_array_equal(p.label[n_bank:], labels[groups[key]])
    # Test vectors lie where the scorer found them: their 1-NN cosine distance to the bank is the raw score.
    distance = 1.0 - p.vectors[n_bank:] @ state.bank.T
    raw = result.models["fbeats"].scores.scores.raw[groups[key]]
    np.testing.assert_allclose(distance.min(axis=1), raw, rtol=0, atol=1e-5)  # float32 dot products of unit vectors


@pytest.mark.slow
def test_section_maps_add_one_map_per_model_and_section(report_run, tmp_path, check_png):
  from asd_jax.report import build

  _, workdir, _, _ = report_run
  report = build.write_report(str(workdir), str(tmp_path / "report"), max_points=30, section_maps=True)
  names = {os.path.basename(p) for p in report.figures if os.path.basename(p).startswith("embedding_")}
  assert names == {f"embedding_{k}{m}.png" for k in ("fbeats", "fusion") for m in ("", "_fan_00", "_valve_00")}
  for p in report.figures:
    check_png(open(p, "rb").read(), p)


def test_provenance_holds_config_versions_and_wall_time(report_run):
  config, workdir, _, _ = report_run
  info = json.loads((workdir / "provenance.json").read_text())
  assert info["config"]["model_keys"] == "fbeats,fusion"
  assert info["versions"]["jax"] and info["versions"]["numpy"] == np.__version__
  assert info["wall_s"] >= sum(info["stage_s"].values()) > 0
  assert set(info["stage_s"]) == {"train+embed", "score", "fuse", "export", "evaluate"}
  text, _ = _page(workdir)  # this invocation's time and all invocations' (issue 23.8)
  assert f"wall time of this invocation (s)</td><td>{info['wall_s']:.1f}" in text
  assert (f"wall time of all {len(info['invocations'])} invocation(s) on this workdir (s)</td>"
          f"<td>{info['total_wall_s']:.1f}") in text


def test_the_page_states_every_encoder_s_starting_weights(report_run):
  config, workdir, _, _ = report_run
  text, _ = _page(workdir)
  seed = config.models.fbeats.fine_tune.seed  # the run asked for random BEATs and EAT (conftest)
  assert "<h3>Starting weights</h3>" in text
  assert f"<tr><td>FBEATs</td><td>BEATs</td><td>random weights (seed {seed}; init.random_weights=beats,eat)</td></tr>" \
      in text
  assert text.count("<td>BEATs</td><td>random weights") == 1  # Fusion (concatenation) has no encoder of its own


def test_starting_weight_rows_name_checkpoints_with_their_digest_and_the_pre_training():
  from asd_jax.report import build
  rows = build.starting_weights_rows(
      {"feat": {"eat": {"source": "pre-training", "path": "/w/pretrain/encoder", "sha256": "sha256:ab"}},
       "dual_branch": {"beats": {"source": "checkpoint", "path": "/c/beats", "sha256": "sha256:cd"},
                       "eat": {"source": "random", "seed": 3, "why": "init.random_weights=eat"}},
       "pretraining": {"source": "checkpoint", "path": "/c/eat_large", "sha256": "sha256:ef"}},
      {"feat": "FEAT", "dual_branch": "Dual-Branch"})
  assert rows == [("FEAT", "EAT", "pre-training /w/pretrain/encoder (sha256:ab)"),
                  ("Dual-Branch", "BEATs", "checkpoint /c/beats (sha256:cd)"),
                  ("Dual-Branch", "EAT", "random weights (seed 3; init.random_weights=eat)"),
                  ("EAT pre-training", "EAT", "checkpoint /c/eat_large (sha256:ef)")]


def test_a_folder_that_is_not_a_workdir_is_one_error_line(tmp_path, run_module):
  proc = run_module("asd_jax.report", f"--workdir={tmp_path}")
  assert proc.returncode == 1
  assert proc.stderr.strip() == f"error: {tmp_path}/results.json: missing (is this a pipeline workdir? " \
      "`python -m asd_jax.pipeline` writes it)"
  assert not (tmp_path / "report").exists()


def test_missing_workdir_files_are_named(tmp_path, report_run):
  _, workdir, _, _ = report_run
  with pytest.raises(collect.WorkdirError, match="results.json: missing"):
    collect.read(str(tmp_path))
  os.makedirs(tmp_path / "scores")
  for name in ("results.json", "tables.md"):
    (tmp_path / name).write_bytes((workdir / name).read_bytes())
  with pytest.raises(collect.WorkdirError, match="fbeats_test.npz: missing"):
    collect.read(str(tmp_path))


def test_detect_histograms_show_the_systems_training_scores_and_threshold(report_run, tmp_path, check_png):
  from asd_jax.detector import detector as detector_lib

  config, _, result, _ = report_run
  system = detector_lib.Detector(result.detector_dir)  # loads the scorers; the encoders only when embedding
  fused = result.systems[system.system].fused
  detections = [detector_lib.Detection(path=r.path, machine=r.machine, section=r.section, score=float(score),
                                       decision=int(d), threshold=0.0, nearest_train_clip="", model_scores={})
                for r, score, d in zip(result.test_records, fused.scores, fused.decisions)][::7]
  paths = histograms.write_detect_figures(system, detections, str(tmp_path / "plots"))
  assert [os.path.basename(p) for p in paths] == ["scores_fan_section_00.png", "scores_valve_section_00.png"]
  for p in paths:
    check_png(open(p, "rb").read(), p)
  for key, state in result.models["fbeats"].scorer.sections.items():
    # What the histogram draws as the section's normal training scores is what its threshold was fitted on.
    train = fusion.fused_train_scores(system.weights, system.scorers)[key]
    # The same weighted sum written out (float64 sums of a few terms of order 1: equal up to rounding).
    by_hand = sum(w * result.models[k].scorer.sections[key].train_scores for k, w in system.weights.items() if w)
    np.testing.assert_allclose(train, by_hand, rtol=1e-12, atol=1e-12)
    assert threshold.fit_threshold(train, method=config.threshold_method, quantile=config.threshold_quantile) \
        == system.thresholds[key] == fused.thresholds[key]


@pytest.mark.slow
def test_detect_cli_plot_dir_writes_a_histogram_per_section(report_run, tmp_path, run_module, check_png):
  _, _, result, _ = report_run
  chosen = [r for r in result.test_records if r.machine == "fan"][:2] + \
      [r for r in result.test_records if r.machine == "valve"][:1]
  plots = tmp_path / "plots"
  proc = run_module("asd_jax.detect", f"--detector={result.detector_dir}", f"--plot_dir={plots}",
                    *[r.path for r in chosen])
  assert proc.returncode == 0, proc.stderr
  names = sorted(p.name for p in plots.iterdir())
  assert names == ["scores_fan_section_00.png", "scores_valve_section_00.png"]
  for p in plots.iterdir():
    check_png(p.read_bytes(), p.name)
    assert f"histogram: {p}" in proc.stdout


def test_the_pipeline_warns_that_a_model_that_cannot_learn_ended_near_chance_and_the_page_shows_it(report_run):
  """FBEATs trains at a learning rate of 1e-12 (conftest): its parameters stay the random ones, so its accuracy is
  that of a random classifier, at most chance in expectation. The pipeline names it in a warning, results.json
  keeps the warning, and the report shows it."""
  _, workdir, result, _ = report_run
  rows = [json.loads(line) for line in (workdir / "models" / "fbeats" / "metrics.jsonl").read_text().splitlines()]
  final = [r for r in rows if "num_classes" in r][-1]
  threshold = final["chance_accuracy"] + 0.1 * (1 - final["chance_accuracy"])  # finetuning.health.NEAR_CHANCE
  assert final["train_accuracy"] < threshold
  (warning,) = result.warnings
  assert warning.startswith(f"FBEATs: training accuracy {final['train_accuracy']:.3f} is near chance")
  assert json.loads((workdir / "results.json").read_text())["warnings"] == [warning]
  page, _ = _page(workdir)
  assert html.escape(warning, quote=True) in page and "Training health" in page
