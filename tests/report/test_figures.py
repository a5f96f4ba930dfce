"""The figure modules on synthetic arrays: the numbers they show, their grouping rules, valid small PNGs."""

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from asd_jax.evaluation import metrics
from asd_jax.report import curves, embedding_map, histograms, html, roc, style


def _section(rng, n=60):
  labels = (np.arange(n) % 3 == 0).astype(int)
  domains = (np.arange(n) % 2).astype(int)
  scores = rng.normal(size=n) + 1.2 * labels
  return labels, domains, scores


def test_roc_values_are_the_metrics_modules_and_the_curves_enclose_them():
  rng = np.random.default_rng(0)
  labels, domains, scores = _section(rng)
  rs = roc.roc_set("M", "fan", "00", labels, domains, scores)
  expected = metrics.section_metrics("fan", "00", labels, domains, scores)
  assert rs.values == {"auc_source": expected.auc_source, "auc_target": expected.auc_target, "pauc": expected.pauc}
  # The drawn curves are the ones the numbers measure: the area under each full curve is its AUC.
  for panel, value in (("source", expected.auc_source), ("target", expected.auc_target)):
    fpr, tpr = rs.curves[panel]
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert sk_metrics.auc(fpr, tpr) == pytest.approx(value, abs=1e-12)
  source = (domains == 0) | (labels == 1)
  assert len(rs.curves["source"][0]) == len(np.unique(scores[source])) + 1  # every threshold kept
  assert roc.percent(0.61234) == "61.23"


def test_roc_figure_is_a_png_and_refuses_no_scorers(check_png):
  rng = np.random.default_rng(1)
  labels, domains, scores = _section(rng)
  sets = [roc.roc_set(f"M{i}", "fan", "00", labels, domains, scores + rng.normal(size=scores.shape)) for i in range(9)]
  check_png(style.png_bytes(roc.roc_figure("fan section 00", {"models": sets[:6], "fused systems": sets[6:]})))
  with pytest.raises(ValueError, match="no scorers"):
    roc.roc_figure("fan section 00", {"models": []})


def test_histograms_draw_labelled_and_new_clips_and_check_lengths(check_png):
  rng = np.random.default_rng(2)
  row = histograms.ScorerHistograms("M", 1.0, {
      "source": histograms.DomainScores(rng.normal(size=40), rng.normal(size=30), np.arange(30) % 2),
      "target": histograms.DomainScores(rng.normal(size=3), rng.normal(size=30), np.arange(30) % 2)})
  check_png(style.png_bytes(histograms.section_figure("fan section 00", [row, row])))
  fig = histograms.detect_figure("fan section 00", rng.normal(size=50), 1.2, np.array([0.1, 2.0]),
                                 new_names=["a.wav", "b.wav"])
  check_png(style.png_bytes(fig))
  labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
  assert labels == ["normal training clips", "scored recordings", "decision threshold", "1: a.wav", "2: b.wav"]
  assert [line.get_xdata()[0] for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"] == [1.2]
  with pytest.raises(ValueError, match="2 scores but labels"):
    histograms.detect_figure("x", np.zeros(5), 0.0, np.zeros(2), np.zeros(3))


def test_unlabelled_test_clips_and_unknown_domains_are_drawn_as_such_not_as_normal_or_source():
  """Issue 23: the report mapped unlabelled test clips as "normal, test" and unknown domains as "source"."""
  rng = np.random.default_rng(5)
  n = 24
  role = np.array([embedding_map.TRAIN] * 12 + [embedding_map.TEST] * 12)
  domain = np.array([0] * 12 + [-1] * 12)  # an evaluation set: its test clips' domains are hidden
  label = np.array([0] * 12 + [-1] * 12)
  points = embedding_map.MapPoints(rng.normal(size=(n, 8)), role, domain, label, np.array(["fan/a"] * n))
  fig = embedding_map.embedding_figure("M", rng.normal(size=(n, 2)), points)
  by_domain = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
  by_label = [t.get_text() for t in fig.axes[2].get_legend().get_texts()]
  assert by_domain == ["source, training", "domain unknown, test"]
  assert by_label == ["normal, training", "unlabelled, test"]
  row = histograms.ScorerHistograms("M", 1.0, {"all clips": histograms.DomainScores(
      rng.normal(size=12), rng.normal(size=5), np.array([0, 1, -1, -1, -1]))})
  fig = histograms.section_figure("fan section 00", [row])
  assert "unlabelled test clips" in [t.get_text() for t in fig.legends[0].get_texts()]
  assert fig.axes[0].get_title() == "M, all clips\n12 training, 1 normal, 1 anomalous, 3 unlabelled"


def test_the_report_reader_keeps_unknown_labels_domains_and_attributes_unknown():
  from asd_jax.data import records
  from asd_jax.evaluation.protocol import Protocol
  from asd_jax.report import collect
  hidden = records.ClipRecord(path="fan/test/section_00_0000.wav", machine="fan", section="00", split="test")
  assert (collect._label(hidden), collect._domain(hidden), collect._class(hidden)) == (-1, -1,
                                                                                       "fan/attributes unknown")
  # DCASE 2020 has no domains; its names are parsed as source, and the report shows them as unknown.
  clip_2020 = records.ClipRecord(path="pump/test/normal_id_00_00000000.wav", machine="pump", section="00",
                                 split="test", domain="source", label="normal")
  assert collect._domain(clip_2020, Protocol.DCASE2020) == -1 and collect._domain(clip_2020) == 0
  assert collect._label(clip_2020) == 0


def test_subsample_keeps_small_groups_whole_and_shares_the_cap():
  group = np.array([0] * 200 + [1] * 1000 + [2] * 10 + [3] * 990)  # test, source, target, SMOTE
  kept = embedding_map.subsample(group, 600, seed=0)
  counts = np.bincount(group[kept], minlength=4)
  # target keeps its 10; the 590 left are shared by the three others: 196 each, and 2 more for the last ones.
  assert counts.tolist() == [196, 197, 10, 197] and len(kept) == 600
  assert np.array_equal(kept, np.sort(kept)) and len(np.unique(kept)) == 600
  np.testing.assert_array_equal(kept, embedding_map.subsample(group, 600, seed=0))
  np.testing.assert_array_equal(embedding_map.subsample(group[:50], 600), np.arange(50))


def test_groups_are_per_section_so_every_section_shares_the_cap():
  role = np.array([embedding_map.TEST, embedding_map.TRAIN, embedding_map.TRAIN, embedding_map.SMOTE] * 2)
  domain = np.array([0, 0, 1, 1] * 2)
  section = np.array(["fan 00"] * 4 + ["valve 00"] * 4, dtype=object)
  points = embedding_map.MapPoints(np.zeros((8, 2)), role, domain, np.zeros(8), np.array(["c"] * 8), section=section)
  assert embedding_map.groups(points).tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
  alone = embedding_map.MapPoints(np.zeros((4, 2)), role[:4], domain[:4], np.zeros(4), np.array(["c"] * 4))
  assert embedding_map.groups(alone).tolist() == [0, 1, 2, 3] and alone.section.tolist() == [""] * 4


def test_a_map_of_several_sections_gets_a_fourth_panel_by_section(check_png):
  rng = np.random.default_rng(4)
  n = 40
  role = np.array([embedding_map.TRAIN, embedding_map.TEST] * (n // 2))
  section = np.array(["fan 00"] * (n // 2) + ["valve 00"] * (n // 2), dtype=object)
  points = embedding_map.MapPoints(rng.normal(size=(n, 16)), role, np.arange(n) % 2, np.zeros(n),
                                   np.array([f"m/a{i % 3}" for i in range(n)]), section=section)
  fig = embedding_map.embedding_figure("M, all sections", rng.normal(size=(n, 2)), points)
  check_png(style.png_bytes(fig))
  assert len(fig.axes) == 4
  assert [t.get_text() for t in fig.axes[3].get_legend().get_texts()] == ["fan 00", "valve 00"]
  # With several sections the class names keep their machine type ("m/a0"), one section drops it.
  assert "m/a0" in [t.get_text() for t in fig.axes[1].get_legend().get_texts()]


def test_embedding_map_projects_and_draws_every_role(check_png):
  rng = np.random.default_rng(3)
  n = 60
  role = np.array([embedding_map.TRAIN] * 30 + [embedding_map.SMOTE] * 10 + [embedding_map.TEST] * 20)
  points = embedding_map.MapPoints(rng.normal(size=(n, 80)), role, (np.arange(n) % 2), (np.arange(n) % 5 == 0),
                                   np.array([f"fan/a{i % 9}" for i in range(n)]))
  xy = embedding_map.project(points.vectors, seed=0)
  assert xy.shape == (n, 2) and np.all(np.isfinite(xy))
  np.testing.assert_array_equal(xy, embedding_map.project(points.vectors, seed=0))  # fixed seed
  fig = embedding_map.embedding_figure("M, fan section 00", xy, points)
  check_png(style.png_bytes(fig))
  class_legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
  assert "2 other classes" in class_legend and "SMOTE sample" in class_legend  # 9 classes, 7 colours
  with pytest.raises(ValueError, match="vectors but"):
    embedding_map.MapPoints(np.zeros((3, 2)), np.zeros(2), np.zeros(3), np.zeros(3), np.zeros(3))


def test_curve_series_take_every_numeric_key_and_group_them(check_png):
  rows = [{"step": 0, "compile_s": 3.0}]
  rows += [{"step": s, "loss": 1.0 / s, "main_loss": 0.5 / s, "main_scale": 10.0 + s, "featex_scale": 9.0,
            "accuracy": 0.1, "step_s": 0.2, "epoch": s / 5, "note": "text", "flag": True,
            "d2v_regression_loss": 2.0 / s, "target_var": 0.3, "bad": float("nan")} for s in (10, 20, 30)]
  rows[2].update(train_accuracy=0.5, heldout_accuracy=0.4)  # the evaluations of `fine_tune`, every few steps
  rows.append({"step": 40, "only_once": 1.0, "train_accuracy": 0.9, "heldout_accuracy": 0.8, "num_classes": 34})
  data = curves.series(rows)
  assert sorted(data) == ["accuracy", "d2v_regression_loss", "featex_scale", "heldout_accuracy", "loss", "main_loss",
                          "main_scale", "step_s", "target_var", "train_accuracy"]
  np.testing.assert_array_equal(data["loss"][0], [10.0, 20.0, 30.0])
  by_title = {p.title: p.keys for p in curves.panels(list(data))}
  assert by_title["losses"] == ("loss", "main_loss", "d2v_regression_loss")
  assert by_title["SCAdaCos scale s"] == ("main_scale", "featex_scale")
  assert by_title["classification accuracy"] == ("accuracy", "train_accuracy", "heldout_accuracy")
  assert by_title["target_var"] == ("target_var",)  # unknown: a panel of its own, under its own name
  check_png(style.png_bytes(curves.curves_figure("run", data)))
  with pytest.raises(ValueError, match="no numeric series"):
    curves.curves_figure("run", {})


def test_page_escapes_text_and_keeps_exact_metric_values():
  tables = "Table 1: <caption>\n\n| model | fan |\n|---|---|\n| A&B | 61.20 |\n"
  out = html.markdown_tables(tables)
  assert "<p><strong>Table 1: &lt;caption&gt;</strong></p>" in out
  assert "<th>model</th><th>fan</th>" in out and "<td>A&amp;B</td><td>61.20</td>" in out and "---" not in out
  cell = html.metric_cell(0.1 + 0.2, scorer="m", metric="auc_source")
  assert 'data-value="0.30000000000000004"' in cell and ">30.00</td>" in cell
  page = html.page("t", [("a", "A <b>", html.table(["x"], [[cell]]))])
  assert page.startswith("<!DOCTYPE html>") and "A &lt;b&gt;" in page and cell in page


def test_png_files_are_small_and_written_atomically(tmp_path, check_png):
  rng = np.random.default_rng(4)
  fig = histograms.detect_figure("x", rng.normal(size=100), 0.5, rng.normal(size=5))
  full, reduced = style.png_bytes(fig, colors=0), style.png_bytes(fig)
  assert len(reduced) < len(full)
  path = style.save_png(fig, str(tmp_path / "a" / "x.png"))
  check_png(open(path, "rb").read())
  assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.png"]  # no temporary file left


def test_a_report_folder_keeps_only_the_figures_of_the_latest_report(tmp_path, check_png):
  from asd_jax.report import build

  figures = build._Figures(str(tmp_path))
  (tmp_path / "figures" / "embedding_old_model_fan_00.png").write_bytes(b"stale")
  (tmp_path / "figures" / "notes.txt").write_text("not ours")
  image = figures.add(histograms.detect_figure("x", np.arange(10.0), 5.0, np.array([1.0])), "scores_fan_00", "alt")
  figures.remove_stale()
  assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["notes.txt", "scores_fan_00.png"]
  assert image.file == "figures/scores_fan_00.png"
  check_png((tmp_path / image.file).read_bytes())
