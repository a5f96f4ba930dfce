"""The one-command pipeline on a tiny synthetic dataset: scores, systems, tables, files, caching, export.

The fast module runs two tiny BEATs models (full and LoRA fine-tuning, 1 epoch) and their concatenation on
one machine type; the slow test runs every model of `configs/demo_pipeline.py` on two machine types.
"""

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from asd_jax import evaluate
from asd_jax import pipeline
from asd_jax import systems
from asd_jax.data import synth
from asd_jax.scoring import fusion
from configs import demo_pipeline

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(root, model_keys, *, fusion_sources=None):
  c = demo_pipeline.get_config()
  c.data.root = str(root)
  c.model_keys = model_keys
  if fusion_sources:
    c.models.fusion.sources = fusion_sources
  for key in ("fbeats", "lbeats", "feat", "leat", "dual_branch"):
    t = c.models[key].train
    t.train.epochs = 1
    t.train.batch_size = 4
    t.embed.batch_size = 8
  return c


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("pipeline") / "data"
  synth.generate(root, scale=0.01, duration=2.0, machines=("fan",))
  return root


@pytest.fixture(scope="module")
def first_run(dataset, tmp_path_factory):
  config = tiny_config(dataset, "fbeats,lbeats,fusion", fusion_sources="fbeats,lbeats")
  workdir = tmp_path_factory.mktemp("pipeline") / "work"
  result = pipeline.run(config, str(workdir), progress=False)
  return config, workdir, result


def test_every_model_and_system_is_scored_and_evaluated(first_run):
  config, _, result = first_run
  n = len(result.test_records)
  assert list(result.models) == ["fbeats", "lbeats", "fusion"]
  for key, m in result.models.items():
    assert m.scores.normalized.shape == (n,) and np.all(np.isfinite(m.scores.normalized)), key
    recomputed = evaluate.evaluate_records(result.test_records, m.scores.normalized, m.scores.decisions)
    assert m.evaluation.official_score == pytest.approx(recomputed.official_score)
  assert sorted(result.systems) == ["grid", "system1", "system2", "system3", "system4"]
  # FEAT, LEAT and Dual-Branch are not run: system1 keeps FBEATs 0.1 and Fusion 0.4, renormalised.
  s1 = result.systems["system1"].spec
  assert s1.reduced and s1.weights == pytest.approx({"fbeats": 0.2, "lbeats": 0.0, "fusion": 0.8})
  for name, r in result.systems.items():
    weights = r.spec.weights
    by_hand = sum(w * result.models[k].scores.normalized for k, w in weights.items())
    np.testing.assert_allclose(r.fused.scores, by_hand, rtol=1e-12, atol=1e-12)
    thresholds = np.array([r.fused.thresholds[(t.machine, t.section)] for t in result.test_records])
    np.testing.assert_array_equal(r.fused.decisions, (by_hand > thresholds).astype(int))


def test_concatenation_model_joins_normalised_source_embeddings(first_run):
  _, workdir, result = first_run
  records = result.train_records + result.test_records
  parts = []
  for key in ("fbeats", "lbeats"):
    e = pipeline.load_embeddings(os.path.join(workdir, "models", key), records)["embedding"]
    parts.append(e / np.linalg.norm(e, axis=1, keepdims=True))
  joined = np.concatenate(parts, axis=1)
  spec = result.models["fusion"].spec
  embeddings = {k: pipeline.load_embeddings(os.path.join(workdir, "models", k), records) for k in spec.sources}
  np.testing.assert_allclose(systems.scorer_vectors(spec, embeddings), joined, rtol=1e-6)
  bank = result.models["fusion"].scorer.sections[("fan", "00")].bank
  assert bank.shape[1] == joined.shape[1]


def test_grid_search_is_at_least_as_good_as_every_model_and_system(first_run):
  _, _, result = first_run
  grid = result.systems["grid"].evaluation.official_score
  # Step 0.25 includes every one-hot weight vector, i.e. each model alone.
  for m in result.models.values():
    assert grid >= m.evaluation.official_score - 1e-12
  for name in ("system1", "system2", "system3", "system4"):
    weights = result.systems[name].spec.weights
    if all(abs(w * 4 - round(w * 4)) < 1e-9 for w in weights.values()):
      assert grid >= result.systems[name].evaluation.official_score - 1e-12
  keys = list(result.models)
  objective = evaluate.official_score_objective(result.test_records)
  best = max(objective(fusion.fuse([result.models[k].scores.normalized for k in keys], w))
             for w in fusion.simplex_grid(len(keys), 0.25))
  assert grid == pytest.approx(best)


def test_submission_files_give_the_same_official_score(first_run, dataset):
  _, workdir, result = first_run
  for name, r in result.systems.items():
    assert r.submission_dir == os.path.join(workdir, "submissions", name)
    assert sorted(os.listdir(r.submission_dir)) == ["anomaly_score_fan_section_00_test.csv",
                                                    "decision_result_fan_section_00_test.csv"]
    # The synthetic ground truth uses evaluation-style names mapped to the dev names by its attributes files.
    from_files = evaluate.evaluate_dirs(r.submission_dir, str(dataset))
    assert from_files.official_score == pytest.approx(r.evaluation.official_score, abs=1e-9)
    assert from_files.sections[0].f1_source == pytest.approx(r.evaluation.sections[0].f1_source)


def test_tables_show_every_model_and_system(first_run):
  _, workdir, result = first_run
  table1, rest = result.tables.split("Table 3")
  for key, m in result.models.items():
    row = next(line for line in table1.splitlines() if line.startswith(f"| {m.spec.name} |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == f"{100 * m.evaluation.machines[0].hmean:.2f}"
    assert cells[-1] == f"{100 * m.evaluation.official_score:.2f}"
  for name in ("system1", "system2", "system3", "system4", "grid"):
    e = result.systems[name].evaluation
    row = next(line for line in rest.splitlines() if line.startswith(f"| {name}"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:5] == [f"{100 * v:.2f}" for v in (e.hmean_auc_source, e.hmean_auc_target, e.hmean_pauc,
                                                       e.official_score)]
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  assert saved["systems"]["system1"]["evaluation"]["official_score"] == pytest.approx(
      result.systems["system1"].evaluation.official_score)


def _mtimes(workdir):
  out = {}
  for key in ("fbeats", "lbeats"):
    d = os.path.join(workdir, "models", key)
    out[key] = {name: os.stat(os.path.join(d, name)).st_mtime_ns
                for name in ("embeddings.npz", "checkpoints", "config.json")}
  return out


def test_rerun_reuses_trained_models_and_embeddings(first_run):
  config, workdir, result = first_run
  before = _mtimes(workdir)
  again = pipeline.run(config, str(workdir), progress=False)
  for key in ("fbeats", "lbeats"):
    assert again.actions[key]["train"] == "cached" and again.actions[key]["embed"] == "cached"
  assert result.actions["fbeats"] == {"train": "ran", "embed": "ran"}
  assert _mtimes(workdir) == before
  for key in result.models:
    np.testing.assert_array_equal(again.models[key].scores.normalized, result.models[key].scores.normalized)


def test_embeddings_are_redone_when_multi_layer_scoring_is_asked(first_run):
  config, workdir, _ = first_run
  config = tiny_config(config.data.root, "fbeats,lbeats,fusion", fusion_sources="fbeats,lbeats")
  config.models.lbeats.layers = "all"
  config.export = False
  result = pipeline.run(config, str(workdir), progress=False)
  assert result.actions["lbeats"] == {"train": "cached", "embed": "ran"}
  assert result.actions["fbeats"]["embed"] == "cached"
  layers = pipeline.load_embeddings(os.path.join(workdir, "models", "lbeats"),
                                    result.test_records)["layer_embeddings"]
  assert layers.shape[1] == 2  # the tiny BEATs' two layers, concatenated by the scorer
  assert result.models["lbeats"].scorer.sections[("fan", "00")].bank.shape[1] == 2 * layers.shape[2]


def test_a_workdir_trained_with_another_config_is_refused(first_run):
  config, workdir, _ = first_run
  changed = tiny_config(config.data.root, "fbeats,lbeats,fusion", fusion_sources="fbeats,lbeats")
  changed.models.fbeats.train.optim.learning_rate = 1e-2
  with pytest.raises(ValueError, match="optim.learning_rate"):
    pipeline.run(changed, str(workdir), progress=False)


def test_a_workdir_trained_on_other_clips_is_refused(first_run, dataset):
  config, workdir, result = first_run
  extra = dataset / "fan" / "train" / "section_00_source_train_normal_0999_m-n_W.wav"
  shutil.copy(result.train_records[0].path, extra)
  try:
    with pytest.raises(ValueError, match="trained on other training clips"):
      pipeline.run(config, str(workdir), progress=False)
  finally:
    extra.unlink()


def test_exported_detector_scores_test_clips_like_the_pipeline(first_run, dataset, tmp_path):
  from asd_jax import detector_export

  _, workdir, result = first_run
  copy = tmp_path / "detector"
  shutil.copytree(result.detector_dir, copy)
  for name in ("detector.json", "models/fbeats/config.json"):
    assert str(workdir) not in (copy / name).read_text()
  det = detector_export.Detector(str(copy))
  assert det.system == "system1" and set(det.weights) == {"fbeats", "lbeats", "fusion"}
  records = result.test_records
  detections = det.score([r.path for r in records], [r.machine for r in records], [r.section for r in records])
  fused = result.systems["system1"].fused
  np.testing.assert_allclose([d.score for d in detections], fused.scores, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal([d.decision for d in detections], fused.decisions)
  # Nearest normal clip by brute force: smallest weighted sum of normalised cosine distances.
  train = result.train_records
  weights = result.systems["system1"].spec.weights
  vectors = {}
  for key in ("fbeats", "lbeats"):
    e = pipeline.load_embeddings(os.path.join(workdir, "models", key), train + records)["embedding"]
    vectors[key] = e / np.linalg.norm(e, axis=1, keepdims=True)
  vectors["fusion"] = np.concatenate([vectors["fbeats"], vectors["lbeats"]], axis=1) / np.sqrt(2.0)
  total = 0.0
  for key, w in weights.items():
    state = result.models[key].scorer.sections[("fan", "00")]
    v = vectors[key]
    distance = 1.0 - v[len(train):] @ v[:len(train)].T
    total = total + w * (distance - state.mean) / state.std
  nearest = [os.path.relpath(train[i].path, os.path.abspath(dataset)) for i in np.argmin(total, axis=1)]
  assert [d.nearest_train_clip for d in detections] == nearest


def test_detect_cli_prints_scores_decisions_and_nearest_clips(first_run, tmp_path):
  _, _, result = first_run
  clips = tmp_path / "fan" / "test"
  clips.mkdir(parents=True)
  chosen = result.test_records[:3]
  for r in chosen:
    shutil.copy(r.path, clips)
  out_csv = tmp_path / "scores.csv"
  proc = subprocess.run([sys.executable, "-m", "asd_jax.detect", f"--system={result.detector_dir}",
                         f"--output={out_csv}", str(clips)], cwd=REPO_ROOT, capture_output=True, text=True,
                        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
  assert proc.returncode == 0, proc.stderr
  rows = [line.split(",") for line in out_csv.read_text().splitlines()[1:]]
  assert [os.path.basename(row[0]) for row in rows] == [os.path.basename(r.path) for r in chosen]
  fused = result.systems["system1"].fused
  np.testing.assert_allclose([float(row[3]) for row in rows], fused.scores[:3], rtol=1e-5, atol=1e-6)
  assert [int(row[5]) for row in rows] == fused.decisions[:3].tolist()
  for row in rows:
    assert ("anomalous" if row[5] == "1" else "normal") in proc.stdout
    assert row[6].startswith("fan/train/section_00_")


@pytest.mark.slow
def test_demo_pipeline_runs_all_six_models_and_exports_dual_branch(tmp_path):
  root = tmp_path / "data"
  synth.generate(root, scale=0.01, duration=2.0, machines=("fan", "valve"))
  config = tiny_config(root, demo_pipeline.get_config().model_keys)
  config.system = "system4"  # every model but FBEATs and FEAT has weight, Dual-Branch the most
  result = pipeline.run(config, str(tmp_path / "work"), progress=False)
  assert [m.spec.name for m in result.models.values()] == ["FBEATs", "LBEATs", "FEAT", "LEAT", "Dual-Branch",
                                                           "Fusion"]
  for m in result.models.values():
    assert [s.machine for s in m.evaluation.machines] == ["fan", "valve"]
  for name in ("system1", "system2", "system3", "system4"):
    assert not result.systems[name].spec.reduced and result.systems[name].evaluation is not None
  from asd_jax import detector_export

  det = detector_export.Detector(result.detector_dir)
  assert sorted(det.weights) == ["dual_branch", "fbeats", "feat", "fusion", "lbeats", "leat"]
  records = result.test_records
  detections = det.score([r.path for r in records], [r.machine for r in records], [r.section for r in records])
  np.testing.assert_allclose([d.score for d in detections], result.systems["system4"].fused.scores, rtol=1e-5,
                             atol=1e-6)


def test_multi_layer_vectors_of_a_two_encoder_model():
  rng = np.random.default_rng(0)
  beats, eat = rng.normal(size=(5, 3, 4)), rng.normal(size=(5, 2, 6))
  spec = systems.ModelSpec(key="dual", name="Dual-Branch", train=None, sources=(), layers="all", scorer={})
  got = systems.scorer_vectors(spec, {"dual": {"embedding": rng.normal(size=(5, 10)), "layers_eat": eat,
                                               "layers_beats": beats}})
  by_hand = np.concatenate([beats[:, i] / np.linalg.norm(beats[:, i], axis=1, keepdims=True) for i in range(3)]
                           + [eat[:, i] / np.linalg.norm(eat[:, i], axis=1, keepdims=True) for i in range(2)], axis=1)
  np.testing.assert_allclose(got, by_hand, rtol=1e-6)
  spec = systems.ModelSpec(key="dual", name="Dual-Branch", train=None, sources=(), layers="last", scorer={})
  with pytest.raises(ValueError, match="per-layer embeddings"):
    systems.scorer_vectors(dataclasses.replace(spec, layers="all"), {"dual": {"embedding": np.zeros((5, 10))}})
