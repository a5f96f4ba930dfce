"""The one-command pipeline on a tiny synthetic dataset: scores, systems, tables, files, caching, export, and the
exported detector computing what the pipeline computed.

The fast module runs two tiny BEATs models (full and LoRA fine-tuning, 1 epoch, multi-layer scoring), their
concatenation and the non-learned log-mel reference row on one machine type; the slow test runs every model of
`configs/demo_pipeline.py` on two machine types.

Detector tolerances come from the computation. The detector embeds with the pipeline's own function, the same
parameters and the same batch shape, and on CPU each clip runs alone through the same compiled body
(`embed.microbatch`), so its float32 embeddings equal the pipeline's bit for bit (asserted). From equal
embeddings, the scores are float64 sums that may run in another order (other row counts): a cosine distance of D
terms moves by at most 2 gamma_D (gamma_D = D u / (1 - D u), u = 2^-53), a normalised score by that over the
section's std, a fused score by sum_m |w_m| times that.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile

from asd_jax import pipeline
from asd_jax.data import synth
from asd_jax.detector import detect
from asd_jax.detector import detector as detector_lib
from asd_jax.detector import export as export_lib
from asd_jax.embedding import store
from asd_jax.evaluation import official
from asd_jax.pipeline import specs as specs_lib
from asd_jax.scoring import features
from asd_jax.scoring import fusion
from configs import demo_pipeline

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
U64 = 2.0**-53


def tiny_config(root, model_keys, *, fusion_sources=None):
  c = demo_pipeline.get_config()
  c.data.root = str(root)
  c.model_keys = model_keys
  c.pretrain = None  # the pre-training stage has its own test (tests/pretraining/test_pretrain_run.py)
  c.init.random_weights = "beats,eat"  # tiny encoders, no pre-training: every one from random weights
  if fusion_sources:
    c.models.fusion.sources = fusion_sources
  for key in ("fbeats", "lbeats", "feat", "leat", "dual_branch", "feat_random"):
    t = c.models[key].fine_tune
    t.train.epochs = 1
    t.train.batch_size = 4
    t.embed.batch_size = 8
  for key in ("frozen_beats", "frozen_eat", "log_mel"):
    c.models[key].frozen.embed.batch_size = 8
  return c


def _embeddings(workdir, key, records):
  return store.read(os.path.join(workdir, "models", key, store.ARRAYS), records)


def _fused_bound(result, system, record, dims):
  """The largest difference two float64 summation orders can make to `system`'s fused score of `record`."""
  key = (record.machine, record.section)
  gamma = lambda d: d * U64 / (1 - d * U64)  # noqa: E731
  return sum(abs(w) * 2 * gamma(dims[k]) / result.models[k].scorer.sections[key].std
             for k, w in result.systems[system].spec.weights.items() if w)


def _dims(result):
  return {k: m.scorer.sections[next(iter(m.scorer.sections))].bank.shape[1] for k, m in result.models.items()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("pipeline") / "data"
  synth.generate(root, scale=0.01, duration=2.0, machines=("fan",))
  return root


@pytest.fixture(scope="module")
def first_run(dataset, tmp_path_factory):
  config = tiny_config(dataset, "fbeats,lbeats,fusion,log_mel", fusion_sources="fbeats,lbeats")
  workdir = tmp_path_factory.mktemp("pipeline") / "work"
  result = pipeline.run(config, str(workdir), progress=False)
  return config, workdir, result


def test_every_model_and_system_is_scored_and_evaluated(first_run):
  config, _, result = first_run
  n = len(result.test_records)
  assert list(result.models) == ["fbeats", "lbeats", "fusion", "log_mel"]
  assert [m.spec.reference for m in result.models.values()] == [False, False, False, True]
  for key, m in result.models.items():
    assert m.scores.scores.normalized.shape == (n,) and np.all(np.isfinite(m.scores.scores.normalized)), key
    recomputed = official.evaluate_records(result.test_records, m.scores.scores.normalized, m.scores.scores.decisions)
    assert m.evaluation.official_score == pytest.approx(recomputed.official_score)
  assert sorted(result.systems) == ["grid", "system1", "system2", "system3", "system4"]
  # FEAT, LEAT and Dual-Branch are not run: system1 keeps FBEATs 0.1 and Fusion 0.4, renormalised; the
  # reference row is in no system.
  s1 = result.systems["system1"].spec
  assert s1.reduced and s1.weights == pytest.approx({"fbeats": 0.2, "lbeats": 0.0, "fusion": 0.8})
  for name, r in result.systems.items():
    assert "log_mel" not in r.spec.weights
    terms = [w * result.models[k].scores.scores.normalized for k, w in r.spec.weights.items()]
    by_hand = sum(terms)
    # Two float64 sums of the same m products, in other orders: each within m u sum_k |w_k s_k| of the exact one.
    bound = 2 * len(terms) * U64 * np.sum(np.abs(terms), axis=0)
    assert np.all(np.abs(r.fused.scores - by_hand) <= bound)
    thresholds = np.array([r.fused.thresholds[(t.machine, t.section)] for t in result.test_records])
    np.testing.assert_array_equal(r.fused.decisions, (r.fused.scores > thresholds).astype(int))
    clear = np.abs(by_hand - thresholds) > bound
    np.testing.assert_array_equal(r.fused.decisions[clear], (by_hand > thresholds).astype(int)[clear])


def test_system_configs_fuse_multi_layer_features_of_the_single_encoder_models():
  c = demo_pipeline.get_config()
  c.data.root = "/data"
  layers = {s.key: (s.kind, s.layers, s.sources) for s in specs_lib.model_specs(c)}
  for key in ("fbeats", "lbeats", "feat", "leat"):  # report section 2.4
    assert layers[key] == (specs_lib.FINE_TUNED, "all", ())
  assert layers["dual_branch"] == (specs_lib.FINE_TUNED, "last", ())  # its fused branch features
  assert layers["fusion"] == (specs_lib.CONCATENATION, "last", ("lbeats", "leat"))  # their final features
  assert {k: v[0] for k, v in layers.items() if k.startswith(("frozen", "log"))} == {
      "frozen_beats": specs_lib.FROZEN, "frozen_eat": specs_lib.FROZEN, "log_mel": specs_lib.FROZEN,
      "frozen_eat_random": specs_lib.FROZEN}
  assert layers["feat_random"] == (specs_lib.FINE_TUNED, "all", ())  # FEAT's recipe from a random-init EAT


def test_the_workdir_layout_names_a_model_folder_s_files_as_their_writers_do():
  """`pipeline.workdir` reads without JAX, so it names the training run's files itself: they must be the
  writers' names (`training.loop`, `training.train_log`, `embedding.store`)."""
  from asd_jax.embedding import store
  from asd_jax.pipeline import workdir as workdir_lib
  from asd_jax.training import loop
  from asd_jax.training import train_log

  assert workdir_lib.MODEL_CONFIG == loop.CONFIG and workdir_lib.TRAINING_LOG == train_log.FILE
  assert loop.CHECKPOINTS in workdir_lib.NO_LOGS
  assert workdir_lib.embeddings_path("/w", "leat") == f"/w/models/leat/{store.ARRAYS}"


def test_a_model_entry_by_its_old_field_name_is_one_clear_error():
  c = demo_pipeline.get_config()
  c.data.root = "/data"
  c.models.leat.train = c.models.leat.fine_tune  # a derived config written before the rename (entries are open)
  c.models.leat.fine_tune = None
  with pytest.raises(ValueError, match=r"^config.models.leat.train: that field is now config.models.leat.fine_tune$"):
    specs_lib.model_specs(c)


def test_concatenation_model_joins_normalised_source_embeddings(first_run):
  _, workdir, result = first_run
  records = result.train_records + result.test_records
  parts = []
  for key in ("fbeats", "lbeats"):
    e = _embeddings(workdir, key, records)["embedding"].astype(np.float64)
    parts.append(e / np.linalg.norm(e, axis=1, keepdims=True))
  joined = np.concatenate(parts, axis=1)
  spec = result.models["fusion"].spec
  embeddings = {k: _embeddings(workdir, k, records) for k in spec.sources}
  # Both are float64 normalisations of the same float32 values: equal to a few float64 ulps (64 u is ample).
  np.testing.assert_allclose(features.model_vectors("fusion", embeddings, sources=spec.sources), joined,
                             rtol=64 * U64, atol=64 * U64)
  bank = result.models["fusion"].scorer.sections[("fan", "00")].bank
  assert bank.shape[1] == joined.shape[1]


def test_grid_search_is_at_least_as_good_as_every_model_and_system(first_run):
  _, _, result = first_run
  grid = result.systems["grid"].evaluation.official_score
  keys = [k for k, m in result.models.items() if not m.spec.reference]
  assert keys == ["fbeats", "lbeats", "fusion"] and set(result.systems["grid"].spec.weights) == set(keys)
  # Step 0.25 includes every one-hot weight vector, i.e. each model alone.
  for k in keys:
    assert grid >= result.models[k].evaluation.official_score - 1e-12
  for name in ("system1", "system2", "system3", "system4"):
    weights = result.systems[name].spec.weights
    if all(abs(w * 4 - round(w * 4)) < 1e-9 for w in weights.values()):
      assert grid >= result.systems[name].evaluation.official_score - 1e-12
  objective = official.official_score_objective(result.test_records)
  best = max(objective(fusion.fuse([result.models[k].scores.scores.normalized for k in keys], w))
             for w in fusion.simplex_grid(len(keys), 0.25))
  assert grid == pytest.approx(best)


def test_submission_files_give_the_same_official_score(first_run, dataset):
  _, workdir, result = first_run
  for name, r in result.systems.items():
    assert r.submission_dir == os.path.join(workdir, "submissions", name)
    assert sorted(os.listdir(r.submission_dir)) == ["anomaly_score_fan_section_00_test.csv",
                                                    "decision_result_fan_section_00_test.csv"]
    # The synthetic ground truth uses evaluation-style names mapped to the dev names by its attributes files.
    from_files = official.evaluate_dirs(r.submission_dir, str(dataset))
    assert from_files.official_score == pytest.approx(r.evaluation.official_score, abs=1e-9)
    assert from_files.sections[0].f1_source == pytest.approx(r.evaluation.sections[0].f1_source)


def test_tables_show_every_model_reference_rows_last_and_every_system(first_run):
  _, workdir, result = first_run
  table1, rest = result.tables.split("Table 3")
  rows = [line for line in table1.splitlines() if line.startswith("| ") and not line.startswith("| model")]
  assert [r.split("|")[1].strip() for r in rows] == ["FBEATs", "LBEATs", "Fusion", "log-mel mean/std (not learned)"]
  assert "Reference rows, not fused into any system: log-mel mean/std (not learned)." in table1
  for key, m in result.models.items():
    row = next(line for line in rows if line.startswith(f"| {m.spec.name} |"))
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
  assert saved["models"]["log_mel"]["reference"] and saved["models"]["log_mel"]["kind"] == "frozen"
  with np.load(os.path.join(workdir, "scores", "system1_fused.npz")) as f:
    np.testing.assert_array_equal(f["scores"], result.systems["system1"].fused.scores)
    np.testing.assert_array_equal(f["nearest_train_clip"], result.systems["system1"].fused.nearest_train_clip)


def _mtimes(workdir):
  out = {}
  for key in ("fbeats", "lbeats", "log_mel"):
    d = os.path.join(workdir, "models", key)
    out[key] = {name: os.stat(os.path.join(d, name)).st_mtime_ns for name in ("embeddings.npz", "config.json")}
  return out


def _provenance(workdir):
  return json.loads((pathlib.Path(workdir) / "provenance.json").read_text())


def test_rerun_reuses_trained_models_and_embeddings(first_run):
  config, workdir, result = first_run
  before = _mtimes(workdir)
  earlier = _provenance(workdir)["invocations"]
  again = pipeline.run(config, str(workdir), progress=False)
  # Issue 23.8: provenance.json held only the last invocation's wall time; it adds each invocation's.
  info = _provenance(workdir)
  assert info["invocations"][:-1] == earlier and earlier[0]["finished"] is not None
  assert info["invocations"][-1] == {field: info[field] for field in ("started", "finished", "wall_s", "stage_s")}
  assert info["invocations"][-1]["finished"] is not None
  assert info["total_wall_s"] == pytest.approx(sum(entry["wall_s"] for entry in info["invocations"]), rel=1e-12)
  assert info["total_wall_s"] > earlier[0]["wall_s"] > info["wall_s"] > 0  # the rerun trains nothing
  for key in ("fbeats", "lbeats"):
    assert again.actions[key] == {"train": "cached", "embed": "cached"}
  assert again.actions["log_mel"] == {"embed": "cached"}
  assert result.actions["fbeats"] == {"train": "ran", "embed": "ran"} and result.actions["log_mel"] == {"embed": "ran"}
  assert _mtimes(workdir) == before
  for key in result.models:
    np.testing.assert_array_equal(again.models[key].scores.scores.normalized,
                                  result.models[key].scores.scores.normalized)


def test_embeddings_are_redone_when_the_layer_setting_changes(first_run, tmp_path):
  config, workdir, _ = first_run
  workdir = shutil.copytree(workdir, tmp_path / "work")  # the other tests use the first run's files
  config = tiny_config(config.data.root, "fbeats,lbeats,fusion", fusion_sources="fbeats,lbeats")
  config.models.lbeats.layers = "last"
  config.export = False
  result = pipeline.run(config, str(workdir), progress=False)
  assert result.actions["lbeats"] == {"train": "cached", "embed": "ran"}
  assert result.actions["fbeats"]["embed"] == "cached"
  assert set(_embeddings(workdir, "lbeats", result.test_records)) == {"embedding"}
  layers = _embeddings(workdir, "fbeats", result.test_records)["layer_embeddings"]
  assert layers.shape[1] == 2  # the tiny BEATs' two layers, concatenated by the scorer
  assert result.models["fbeats"].scorer.sections[("fan", "00")].bank.shape[1] == 2 * layers.shape[2]


def test_an_invocation_that_stops_keeps_its_wall_time_in_the_provenance(dataset, tmp_path):
  """Issue 23.8: a killed invocation's time was lost (provenance.json was written at the end only); it is written
  at every progress line, and one that stops (here: a dataset without test clips) stays "finished": null."""
  root = tmp_path / "data"
  shutil.copytree(dataset / "fan" / "train", root / "fan" / "train")
  config = tiny_config(root, "log_mel")
  for _ in range(2):
    with pytest.raises(ValueError, match="need train and test clips, found"):
      pipeline.run(config, str(tmp_path / "work"), progress=False)
  info = _provenance(tmp_path / "work")
  assert [entry["finished"] for entry in info["invocations"]] == [None, None] and info["finished"] is None
  assert all(entry["wall_s"] > 0 and entry["stage_s"] == {} for entry in info["invocations"])
  assert info["total_wall_s"] == pytest.approx(sum(entry["wall_s"] for entry in info["invocations"]), rel=1e-12)


def test_a_workdir_trained_with_another_config_is_refused(first_run):
  config, workdir, _ = first_run
  changed = tiny_config(config.data.root, "fbeats,lbeats,fusion", fusion_sources="fbeats,lbeats")
  changed.models.fbeats.fine_tune.optim.learning_rate = 1e-2
  with pytest.raises(ValueError, match="optim.learning_rate"):
    pipeline.run(changed, str(workdir), progress=False)


def test_a_workdir_trained_with_another_channel_policy_is_refused(first_run):
  """`--config.data.channels` reaches every model's config, and a model trained with another policy is refused
  (its checkpoint recorded the policy), not reused or silently retrained."""
  config, workdir, _ = first_run
  changed = tiny_config(config.data.root, "fbeats,lbeats,fusion", fusion_sources="fbeats,lbeats")
  changed.data.channels = "mean"  # the mono synthetic set reads alike with near and mean: only the record differs
  with pytest.raises(ValueError, match=r"config.data.channels: saved 'near', now 'mean'"):
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
  # A recording replaced by another of the same size, with its modification time put back (as `cp -p` would).
  clip = pathlib.Path(result.train_records[1].path)
  original, stat = clip.read_bytes(), clip.stat()
  wav, rate = soundfile.read(str(clip), dtype="int16")
  soundfile.write(str(clip), wav[::-1].copy(), rate, subtype="PCM_16")
  os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  assert clip.stat().st_size == stat.st_size and clip.stat().st_mtime_ns == stat.st_mtime_ns
  try:
    with pytest.raises(ValueError, match="trained on other training clips"):
      pipeline.run(config, str(workdir), progress=False)
  finally:
    clip.write_bytes(original)


def test_exported_detector_computes_what_the_pipeline_computed(first_run, dataset, tmp_path):
  _, workdir, result = first_run
  copy = tmp_path / "detector"
  shutil.copytree(result.detector_dir, copy)
  for name in ("detector.json", "models/fbeats/config.json"):
    assert str(workdir) not in (copy / name).read_text()
  det = detector_lib.Detector(str(copy))
  assert det.system == "system1" and set(det.weights) == {"fbeats", "lbeats", "fusion"}
  records = result.test_records
  # Same parameters as the pipeline's embedding step, and the same float32 embeddings bit for bit.
  for key in ("fbeats", "lbeats"):
    spec = result.models[key].spec
    from asd_jax.finetuning import restore  # the pipeline's side: the workdir's checkpoint

    _, params, _ = restore.trained_params(spec.config, os.path.join(workdir, "models", key))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(params), det.network(key)[2])
  embedded = det.embeddings(records)
  for key in ("fbeats", "lbeats"):
    for name, value in embedded[key].items():
      np.testing.assert_array_equal(value, _embeddings(workdir, key, records)[name], err_msg=f"{key}/{name}")
  detections = det.score([r.path for r in records], [r.machine for r in records], [r.section for r in records])
  fused = result.systems["system1"].fused
  dims = _dims(result)
  for d, record, score, decision in zip(detections, records, fused.scores, fused.decisions):
    bound = _fused_bound(result, "system1", record, dims)
    assert abs(d.score - score) <= bound + 4 * U64 * abs(score)
    if abs(score - d.threshold) > bound:
      assert d.decision == decision
  # The nearest normal clip: the pipeline's fused nearest, and by brute force the smallest weighted sum of
  # normalised cosine distances (float64 from the saved float32 embeddings).
  train = result.train_records
  rel = lambda i: os.path.relpath(train[i].path, os.path.abspath(dataset))  # noqa: E731
  assert [d.nearest_train_clip for d in detections] == [rel(i) for i in fused.nearest_train_clip]
  weights = result.systems["system1"].spec.weights
  vectors = {}
  for key in ("fbeats", "lbeats"):
    e = _embeddings(workdir, key, train + records)
    layers = e["layer_embeddings"].astype(np.float64)
    layers /= np.linalg.norm(layers, axis=-1, keepdims=True)
    vectors[key] = layers.reshape(len(layers), -1) / np.sqrt(layers.shape[1])
    last = e["embedding"].astype(np.float64)
    vectors[key + "_last"] = last / np.linalg.norm(last, axis=1, keepdims=True)
  vectors["fusion"] = np.concatenate([vectors["fbeats_last"], vectors["lbeats_last"]], axis=1) / np.sqrt(2.0)
  total = 0.0
  for key, w in weights.items():
    state = result.models[key].scorer.sections[("fan", "00")]
    v = vectors[key]
    distance = 1.0 - v[len(train):] @ v[:len(train)].T
    total = total + w * (distance - state.mean) / state.std
  assert [d.nearest_train_clip for d in detections] == [rel(i) for i in np.argmin(total, axis=1)]


def test_detector_scores_do_not_depend_on_the_clips_scored_with_them(first_run):
  _, _, result = first_run
  det = detector_lib.Detector(result.detector_dir)
  records = result.test_records
  together = det.score([r.path for r in records], [r.machine for r in records], [r.section for r in records])
  dims = _dims(result)
  for record, all_at_once in list(zip(records, together))[::3]:
    alone = det.score([record.path], [record.machine], [record.section])[0]
    assert abs(alone.score - all_at_once.score) <= _fused_bound(result, "system1", record, dims) + 4 * U64 * abs(
        all_at_once.score)
    assert alone.nearest_train_clip == all_at_once.nearest_train_clip
    assert alone.model_scores.keys() == all_at_once.model_scores.keys()


def test_detect_cli_prints_scores_decisions_and_nearest_clips(first_run, tmp_path):
  _, _, result = first_run
  clips = tmp_path / "fan" / "test"
  clips.mkdir(parents=True)
  chosen = result.test_records[:3]
  for r in chosen:
    shutil.copy(r.path, clips)
  out_csv = tmp_path / "scores.csv"
  proc = subprocess.run([sys.executable, "-m", "asd_jax.detect", f"--detector={result.detector_dir}",
                         f"--output={out_csv}", str(clips)], cwd=REPO_ROOT, capture_output=True, text=True,
                        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
  assert proc.returncode == 0, proc.stderr
  rows = [line.split(",") for line in out_csv.read_text().splitlines()[1:]]
  assert [os.path.basename(row[0]) for row in rows] == [os.path.basename(r.path) for r in chosen]
  fused = result.systems["system1"].fused
  dims = _dims(result)
  for row, record, score, decision in zip(rows, chosen, fused.scores, fused.decisions):
    # The program runs in its own process with the test's device settings (XLA_FLAGS), hence the same
    # compiled forward and the same embeddings; the bound is that of the float64 scoring.
    bound = _fused_bound(result, "system1", record, dims)
    assert abs(float(row[3]) - score) <= bound + 4 * U64 * abs(score)
    if abs(score - float(row[4])) > bound:
      assert int(row[5]) == decision
    assert ("anomalous" if row[5] == "1" else "normal") in proc.stdout
    assert row[6].startswith("fan/train/section_00_")


def test_a_crashed_export_leaves_the_old_detector_and_a_rerun_succeeds(first_run, tmp_path, monkeypatch):
  config, workdir, result = first_run
  target = tmp_path / "detector"
  shutil.copytree(result.detector_dir, target)
  before = (target / detector_lib.MANIFEST).read_text()
  system = result.systems["system1"]
  specs = [m.spec for m in result.models.values()]
  needed = export_lib.needed_models(system.spec.weights, {s.key: s.sources for s in specs})
  models = pipeline.stages.exported_models(specs, str(workdir), result.models, needed)

  def export():
    return export_lib.export(str(target), system="system1", weights=system.spec.weights, models=models,
                               thresholds=system.fused.thresholds, root=config.data.root, threshold_method="gamma",
                               threshold_quantile=0.9)

  # 1. A crash while the new folder is written (the second model's scorer): the old detector stays whole.
  saves = []

  def failing_save(self, path):
    saves.append(path)
    if len(saves) == 2:
      raise OSError("No space left on device")
    return real_save(self, path)

  real_save = detector_lib.scorer_lib.Scorer.save
  monkeypatch.setattr(detector_lib.scorer_lib.Scorer, "save", failing_save)
  with pytest.raises(OSError, match="No space left"):
    export()
  monkeypatch.undo()
  assert (target / detector_lib.MANIFEST).read_text() == before
  assert [p.name for p in tmp_path.iterdir() if p.name.startswith("detector.staging-")]  # the half-written one
  assert detector_lib.Detector(str(target)).score([result.test_records[0].path], ["fan"], ["00"])
  # 2. A crash between moving the old folder aside and moving the new one in: readers get the old one back.
  # (The encoders' converted checkpoints are published by the same `_move` inside the staging folder; only the
  # move of the staging folder onto the detector's path is the one to interrupt.)
  moves = []

  def failing_move(src, dst):
    moves.append((src, dst))
    if os.path.abspath(dst) == str(target):
      assert any(os.path.abspath(s) == str(target) for s, _ in moves)  # the old one was moved aside first
      raise OSError("killed")
    return real_move(src, dst)

  real_move = detector_lib.atomic._move  # pylint: disable=protected-access
  monkeypatch.setattr(detector_lib.atomic, "_move", failing_move)
  with pytest.raises(OSError, match="killed"):
    export()
  monkeypatch.undo()
  assert not target.exists()
  assert detector_lib.Detector(str(target)).system == "system1"  # recovered the old folder
  assert (target / detector_lib.MANIFEST).read_text() == before
  # 3. The re-run replaces it and cleans up.
  export()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["detector"]
  assert detector_lib.Detector(str(target)).system == "system1"


@pytest.mark.parametrize("missing", ["head.npz", "encoders.json", "config.json"])
def test_a_detector_missing_a_file_is_one_error_naming_it_not_a_problem_of_the_input(first_run, tmp_path, missing):
  """Issue 26.5: a missing head.npz or encoders.json was a raw [Errno 2]; a missing config.json a problem "with the
  input" under the recording's name."""
  _, _, result = first_run
  copy = tmp_path / "detector"
  shutil.copytree(result.detector_dir, copy)
  (copy / "models" / "fbeats" / missing).unlink()
  clip = result.test_records[0].path
  with pytest.raises(detector_lib.DetectorError) as error:
    detect.detect(str(copy), [clip])
  assert str(error.value) == (
      f"{copy}: an incomplete detector folder, 1 file(s) missing: {copy / 'models' / 'fbeats' / missing}; export "
      "the detector again (re-run the pipeline on its workdir, which writes WORKDIR/detector)")


def test_a_detector_missing_an_encoder_chunk_says_to_export_it_again(first_run, tmp_path):
  """Issue 26.5: the converted checkpoint's own remedy, "convert it again", is wrong inside a detector."""
  _, _, result = first_run
  copy = tmp_path / "detector"
  shutil.copytree(result.detector_dir, copy)
  slot, = json.loads((copy / "models" / "fbeats" / "encoders.json").read_text())  # format 5: shared encoders/
  encoder = copy / slot["dir"]
  chunk = max((p for p in (encoder / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  chunk.unlink()
  det = detector_lib.Detector(str(copy))  # loads: the encoders are checked (SHA-256) when first used
  with pytest.raises(detector_lib.DetectorError) as error:
    det.score([result.test_records[0].path], ["fan"], ["00"])
  assert str(error.value) == (
      f"{copy}: model fbeats: checkpoint {encoder}: damaged: {chunk.relative_to(encoder)} is missing; export the "
      "detector again (re-run the pipeline on its workdir, which writes WORKDIR/detector)")


def test_a_reference_row_exports_and_scores_like_the_pipeline_when_a_system_uses_it(first_run, tmp_path):
  # No system fuses the log-mel row by default; a config may. Its network has no parameters at all.
  config, workdir, result = first_run
  weights = {"log_mel": 1.0}
  scorers = {k: m.scorer for k, m in result.models.items()}
  thresholds = pipeline.stages.fusion.fit_thresholds(weights, scorers)
  specs = [m.spec for m in result.models.values()]
  models = pipeline.stages.exported_models(specs, str(workdir), result.models, {"log_mel"})
  out = export_lib.export(str(tmp_path / "detector"), system="log-mel", weights=weights, models=models,
                            thresholds=thresholds, root=config.data.root, threshold_method="gamma",
                            threshold_quantile=0.9)
  records = result.test_records
  detections = detector_lib.Detector(out).score([r.path for r in records], [r.machine for r in records],
                                                [r.section for r in records])
  dim = result.models["log_mel"].scorer.sections[("fan", "00")].bank.shape[1]
  std = result.models["log_mel"].scorer.sections[("fan", "00")].std
  gamma = dim * U64 / (1 - dim * U64)
  for d, score in zip(detections, result.models["log_mel"].scores.scores.normalized):
    assert abs(d.score - score) <= 2 * gamma / std + 4 * U64 * abs(score)


@pytest.mark.slow
def test_demo_pipeline_runs_all_models_and_exports_dual_branch(tmp_path):
  root = tmp_path / "data"
  synth.generate(root, scale=0.01, duration=2.0, machines=("fan", "valve"))
  config = tiny_config(root, demo_pipeline.get_config().model_keys)
  config.system = "system4"  # every model but FBEATs and FEAT has weight, Dual-Branch the most
  result = pipeline.run(config, str(tmp_path / "work"), progress=False)
  assert [m.spec.name for m in result.models.values()] == [
      "FBEATs", "LBEATs", "FEAT", "LEAT", "Dual-Branch", "Fusion", "BEATs (frozen)", "EAT (frozen)",
      "log-mel mean/std (not learned)"]
  for m in result.models.values():
    assert [s.machine for s in m.evaluation.machines] == ["fan", "valve"]
  for name in ("system1", "system2", "system3", "system4"):
    assert not result.systems[name].spec.reduced and result.systems[name].evaluation is not None
  det = detector_lib.Detector(result.detector_dir)
  assert sorted(det.weights) == ["dual_branch", "fbeats", "feat", "fusion", "lbeats", "leat"]
  records = result.test_records
  detections = det.score([r.path for r in records], [r.machine for r in records], [r.section for r in records])
  dims = _dims(result)
  for d, record, score in zip(detections, records, result.systems["system4"].fused.scores):
    assert abs(d.score - score) <= _fused_bound(result, "system4", record, dims) + 4 * U64 * abs(score)


def test_multi_layer_vectors_of_a_two_encoder_model():
  rng = np.random.default_rng(0)
  beats, eat = rng.normal(size=(5, 3, 4)), rng.normal(size=(5, 2, 6))
  got = features.model_vectors("dual", {"dual": {"embedding": rng.normal(size=(5, 10)), "layers_eat": eat,
                                                 "layers_beats": beats}}, layers="all")
  by_hand = np.concatenate([beats[:, i] / np.linalg.norm(beats[:, i], axis=1, keepdims=True) for i in range(3)]
                           + [eat[:, i] / np.linalg.norm(eat[:, i], axis=1, keepdims=True) for i in range(2)], axis=1)
  np.testing.assert_allclose(got, by_hand, rtol=64 * U64, atol=64 * U64)  # float64 normalisations, both ways
  with pytest.raises(ValueError, match="per-layer embeddings"):
    features.model_vectors("dual", {"dual": {"embedding": np.zeros((5, 10))}}, layers="all")


def test_warnings_name_the_models_that_read_less_than_the_clips_or_ended_near_chance(dataset, tmp_path):
  from asd_jax.data import layout
  from asd_jax.pipeline import stages
  config = tiny_config(dataset, "fbeats,lbeats,fusion,log_mel", fusion_sources="fbeats,lbeats")
  specs = specs_lib.model_specs(config)
  assert stages.clip_length_warnings(specs, layout.scan_dataset(dataset)) == []  # 2 s clips, 2 s read
  longer = tmp_path / "data"
  synth.generate(longer, scale=0.01, duration=3.0, machines=("fan",))
  records = layout.scan_dataset(longer)
  (warning,) = stages.clip_length_warnings(specs, records)
  # Fusion has no embeddings of its own; every other model reads 2 s of the 3 s clips.
  assert warning.startswith(f"FBEATs, LBEATs, log-mel mean/std (not learned): only the first 2 s of each clip is "
                            f"read, but {len(records)} of {len(records)} clips are longer (up to 3 s)")
  model_dir = tmp_path / "fbeats"
  model_dir.mkdir()
  rows = [{"step": 200, "loss": 10.0, "train_accuracy": 0.15, "heldout_accuracy": 0.1, "num_classes": 34,
           "chance_accuracy": 0.124}]
  (model_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (near_chance,) = stages.training_warnings(specs[0], str(model_dir))
  assert near_chance.startswith("FBEATs: training accuracy 0.150 is near chance (0.124 for 34 classes)")
  assert stages.training_summary(str(model_dir)) == (", loss 10.000, training accuracy 0.150, held-out "
                                                     "accuracy 0.100")
  assert stages.training_warnings(specs[0], str(tmp_path)) == () and stages.training_summary(str(tmp_path)) == ""


REAL_2023 = REPO_ROOT / "tests" / "real" / "dcase2023_dev"


@pytest.mark.slow  # two tiny fine-tuning runs and 28 real clips of 10-12 s: about a minute on 2 idle cores
def test_the_pipeline_and_detect_run_end_to_end_on_real_dcase_2023_clips(tmp_path):
  """The committed real DCASE 2023 dev sample (tests/real: 7 machine types, 2 training and 2 test clips each, 10-12 s,
  real names): the pipeline trains, scores, fuses and exports (every section has too few test clips to evaluate:
  the tables say n/a, nothing fails), warns that every model reads only the first 2 s of the clips, and `detect`
  on the real test clips scores each in 2 s windows, the first window being the clip the pipeline scored."""
  config = tiny_config(REAL_2023, "fbeats,lbeats,fusion,log_mel", fusion_sources="fbeats,lbeats")
  result = pipeline.run(config, str(tmp_path / "work"), progress=False)
  assert len(result.train_records) == 14 and len(result.test_records) == 14
  longer = [w for w in result.warnings if "only the first 2 s of each clip is read" in w]
  assert len(longer) == 1 and longer[0].startswith("FBEATs, LBEATs, log-mel mean/std (not learned):")
  assert "28 of 28 clips are longer (up to 12 s)" in longer[0]
  assert "n/a" in result.tables
  fused = result.systems["system1"].fused
  assert fused is not None and np.all(np.isfinite(fused.scores))
  windows_csv = tmp_path / "windows.csv"
  proc = subprocess.run([sys.executable, "-m", "asd_jax.detect", f"--detector={result.detector_dir}",
                         f"--output={tmp_path / 'scores.csv'}", f"--windows_output={windows_csv}",
                         *[r.path for r in result.test_records]], cwd=REPO_ROOT, capture_output=True, text=True,
                        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
  assert proc.returncode == 0, proc.stderr
  rows = [line.split(",") for line in (tmp_path / "scores.csv").read_text().splitlines()[1:]]
  assert [row[0] for row in rows] == [r.path for r in result.test_records]
  by_clip = {}
  for row in [line.split(",") for line in windows_csv.read_text().splitlines()[1:]]:
    by_clip.setdefault(row[0], []).append(row)
  dims = _dims(result)
  for row, record, score in zip(rows, result.test_records, fused.scores):
    seconds = soundfile.info(record.path).duration
    windows = by_clip[record.path]
    assert int(row[7]) == len(windows) == int(seconds // 2)  # 10 s: 5 windows of 2 s, 12 s: 6
    first = [w for w in windows if float(w[4]) == 0.0]
    assert len(first) == 1
    bound = _fused_bound(result, "system1", record, dims)
    assert abs(float(first[0][6]) - score) <= bound + 4 * U64 * abs(score)
    assert float(row[3]) == max(float(w[6]) for w in windows)  # the recording's score: the most anomalous window
