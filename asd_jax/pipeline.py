r"""The whole system in one command: fine-tune, embed, score, fuse, evaluate, write submissions, export.

  python -m asd_jax.pipeline --config=configs/system1.py --workdir=DIR [--config.data.root=ROOT]

For the dataset under `config.data.root` (a DCASE 2025 Task 2 layout; the synthetic one for the demo):
  1. train  every fine-tuned model that is not done yet (`train.train`, resumable; DIR/models/<key>/);
  2. embed  every clip with each trained model (`embed.embed`), skipped when DIR/models/<key>/embeddings.npz
            is up to date with the model's latest checkpoint and the dataset's clips;
  3. score  each model (SMOTE + cosine 1-NN over the normal training clips of each section, leave-one-out
            normalisation, `asd_jax.scoring.detector`); the "Fusion" model joins LBEATs' and LEAT's final
            embeddings; `layers="all"` models score the concatenated pooled outputs of all layers;
  4. fuse   the normalised scores with each system's fixed weights (thresholds fitted on the fused training
            scores), plus a system whose weights are grid-searched on the labelled test clips (an oracle on
            the development set, reported apart);
  5. report the official metrics: Table 1 (per model: each machine type's harmonic mean and the official
            score) and Table 3 (per system: AUC source, AUC target, pAUC, official score), also in
            DIR/results.json and DIR/tables.md;
  6. write  DCASE submission folders DIR/submissions/<system>/ (anomaly_score_*.csv, decision_result_*.csv);
  7. export the detector of `config.system` to DIR/detector/ (see `asd_jax.detector_export`), which
            `python -m asd_jax.detect --system DIR/detector clip.wav` uses without the training data.

Re-running with the same config and workdir retrains and re-embeds nothing; a workdir trained with another
model config is refused (use a new workdir). Each stage prints what it does and for which model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from asd_jax import cli
from asd_jax import embed as embed_lib
from asd_jax import evaluate
from asd_jax import run_info
from asd_jax import systems
from asd_jax import train as train_lib
from asd_jax.data import layout
from asd_jax.data import records as records_lib
from asd_jax.evaluation import files as eval_files
from asd_jax.scoring import detector
from asd_jax.scoring import fusion
from asd_jax.training import checkpoints

GRID_SYSTEM = "grid"
STAMP = "pipeline_stamp.json"
# Fields of a fine-tuning config that may change between runs of one workdir without changing the model.
_IGNORED_CONFIG_FIELDS = ("data.root", "data.num_workers", "train.log_every", "train.checkpoint_every",
                          "train.keep_checkpoints", "train.resume", "train.distributed", "embed")


class Progress:
  """Prints `[  12.3 s] stage  model: what` lines (flushed), so a long run shows where it is."""

  def __init__(self, enabled: bool = True):
    self.enabled = enabled
    self.start = time.perf_counter()

  def __call__(self, stage: str, message: str) -> None:
    if self.enabled:
      print(f"[{time.perf_counter() - self.start:7.1f} s] {stage:<7} {message}", flush=True)


# ------------------------------------------------------------------------------------------- caching


def _config_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def _drop_fields(tree: dict[str, Any], dotted: Sequence[str]) -> dict[str, Any]:
  tree = json.loads(json.dumps(tree))
  for path in dotted:
    node = tree
    *parents, last = path.split(".")
    for p in parents:
      node = node.get(p, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
      node.pop(last, None)
  return tree


def _config_differences(a: Any, b: Any, prefix: str = "") -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b)):
      out += _config_differences(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{prefix}{k}.")
    return out
  return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def check_same_model(config: ml_collections.ConfigDict, model_dir: str) -> None:
  """Raises ValueError when `model_dir` was trained with a config that differs in a field that matters."""
  path = os.path.join(model_dir, "config.json")
  if not os.path.isfile(path):
    return
  with open(path) as f:
    old = _drop_fields(json.load(f), _IGNORED_CONFIG_FIELDS)
  diff = _config_differences(old, _drop_fields(_config_json(config), _IGNORED_CONFIG_FIELDS))
  if diff:
    raise ValueError(f"{model_dir} was trained with another config ({len(diff)} field(s) differ: "
                     f"{'; '.join(diff[:8])}); use a new --workdir or delete that folder")


def _read_stamp(model_dir: str) -> dict[str, Any]:
  path = os.path.join(model_dir, STAMP)
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _write_stamp(model_dir: str, **updates: Any) -> None:
  stamp = {**_read_stamp(model_dir), **updates}
  with open(os.path.join(model_dir, STAMP), "w") as f:
    json.dump(stamp, f, indent=1)


def latest_step(model_dir: str) -> int | None:
  """The latest training checkpoint step in `model_dir/checkpoints`, None without one."""
  ckpt_dir = os.path.join(model_dir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    return None
  ckpt = checkpoints.Checkpointer(ckpt_dir)
  try:
    return ckpt.latest_step()
  finally:
    ckpt.close()


def dataset_digest(records: Sequence[records_lib.ClipRecord], root: str, *, mtimes: bool = True) -> str:
  """SHA-256 over every clip's path (relative to `root`), size and (with `mtimes`) modification time."""
  h = hashlib.sha256()
  for r in records:
    st = os.stat(r.path)
    h.update(f"{os.path.relpath(r.path, root)}\t{st.st_size}\t{st.st_mtime_ns if mtimes else ''}\n".encode())
  return h.hexdigest()


def ensure_trained(spec: systems.ModelSpec, model_dir: str, train_digest: str, *, progress: bool = True) -> str:
  """Trains (or resumes) `spec` in `model_dir` unless done; returns "ran" or "cached".

  `train_digest` (`dataset_digest` of the training clips) is recorded; a finished model whose training clips
  differ from the current ones is refused rather than silently reused.
  """
  check_same_model(spec.train, model_dir)
  stamp = _read_stamp(model_dir)
  if "trained_step" in stamp and latest_step(model_dir) == stamp["trained_step"]:
    if stamp.get("train_clips") != train_digest:
      raise ValueError(f"{model_dir} was trained on other training clips than those now under "
                       f"{spec.train.data.root}; use a new --workdir or delete that folder")
    return "cached"
  train_lib.train(spec.train, model_dir, progress=progress)
  step = latest_step(model_dir)
  if step is None:
    raise RuntimeError(f"training {spec.key} in {model_dir} finished without a checkpoint")
  _write_stamp(model_dir, trained_step=step, train_clips=train_digest)
  return "ran"


def ensure_embedded(spec: systems.ModelSpec, model_dir: str, digest: str, *, all_layers: bool,
                    progress: bool = True) -> str:
  """Writes `model_dir/embeddings.npz` unless it is up to date; returns "ran" or "cached"."""
  stamp = _read_stamp(model_dir).get("embedded", {})
  step = latest_step(model_dir)
  current = (os.path.isfile(os.path.join(model_dir, "embeddings.npz")) and stamp.get("step") == step
             and stamp.get("clips") == digest and (stamp.get("all_layers") or not all_layers))
  if current:
    return "cached"
  embed_lib.embed(spec.train, model_dir, all_layers=all_layers, progress=progress)
  _write_stamp(model_dir, embedded={"step": step, "clips": digest, "all_layers": all_layers})
  return "ran"


def load_embeddings(model_dir: str, records: Sequence[records_lib.ClipRecord]) -> dict[str, np.ndarray]:
  """`embeddings.npz` arrays of `model_dir`, rows reordered to `records` (matched by path)."""
  with open(os.path.join(model_dir, "embeddings_records.json")) as f:
    paths = [r["path"] for r in json.load(f)["records"]]
  row = {p: i for i, p in enumerate(paths)}
  missing = [r.path for r in records if r.path not in row]
  if missing:
    raise ValueError(f"{model_dir}/embeddings.npz lacks {len(missing)} clips, e.g. {missing[:3]}")
  order = np.array([row[r.path] for r in records], np.int64)
  with np.load(os.path.join(model_dir, "embeddings.npz")) as data:
    return {k: data[k][order] for k in data.files}


# ------------------------------------------------------------------------------------------- results


@dataclasses.dataclass
class ModelResult:
  """One model's fitted scorer and its scores of the test clips (normalised [n], decisions [n])."""

  spec: systems.ModelSpec
  scorer: detector.Scorer
  scores: detector.Scores
  evaluation: evaluate.Evaluation | None


@dataclasses.dataclass
class SystemResult:
  spec: systems.SystemSpec
  fused: systems.FusedScores | None
  evaluation: evaluate.Evaluation | None
  submission_dir: str = ""


@dataclasses.dataclass
class PipelineResult:
  """Everything a run produced; `actions[key]` says per stage whether it "ran" or was "cached"."""

  workdir: str
  test_records: list[records_lib.ClipRecord]
  train_records: list[records_lib.ClipRecord]
  models: dict[str, ModelResult]
  systems: dict[str, SystemResult]
  actions: dict[str, dict[str, str]]
  tables: str
  detector_dir: str = ""


def _pct(v: float) -> str:
  return f"{100.0 * v:.2f}"


def format_table1(models: Sequence[ModelResult]) -> str:
  """Per model: harmonic mean of each machine type's AUC (source), AUC (target), pAUC; the official score."""
  evaluated = [m for m in models if m.evaluation is not None]
  if not evaluated:
    return "(no labelled test clips: Table 1 needs the development set)"
  machines = [s.machine for s in evaluated[0].evaluation.machines]
  lines = ["| model | " + " | ".join(machines) + " | official score |", "|---" * (len(machines) + 2) + "|"]
  for m in evaluated:
    by_machine = {s.machine: s.hmean for s in m.evaluation.machines}
    lines.append(f"| {m.spec.name} | " + " | ".join(_pct(by_machine[k]) for k in machines)
                 + f" | {_pct(m.evaluation.official_score)} |")
  return "\n".join(lines)


def format_table3(results: Sequence[SystemResult], model_names: dict[str, str]) -> str:
  """Per system: harmonic means over all sections of AUC (source), AUC (target), pAUC, and the official score."""
  lines = ["| system | AUC (source) | AUC (target) | pAUC | official score | weights |", "|---|---|---|---|---|---|"]
  for r in results:
    weights = ", ".join(f"{model_names[k]} {w:.2f}" for k, w in r.spec.weights.items() if w)
    name = r.spec.name + (" (reduced)" if r.spec.reduced else "")
    if r.evaluation is None:
      lines.append(f"| {name} | | | | | {weights or r.spec.note} |")
      continue
    e = r.evaluation
    lines.append(f"| {name} | {_pct(e.hmean_auc_source)} | {_pct(e.hmean_auc_target)} | {_pct(e.hmean_pauc)} "
                 f"| {_pct(e.official_score)} | {weights} |")
  return "\n".join(lines)


def _evaluation_json(e: evaluate.Evaluation | None) -> dict[str, Any] | None:
  return None if e is None else e.to_json_dict()


# ------------------------------------------------------------------------------------------- stages


def train_and_embed(specs: Sequence[systems.ModelSpec], workdir: str, records: Sequence[records_lib.ClipRecord],
                    root: str, log: Progress, *, bars: bool) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
  """Trains, then embeds, every fine-tuned model not yet done; returns `(model dirs, actions)` by key."""
  trained = [s for s in specs if s.trained]
  digest = dataset_digest(records, root)
  train_digest = dataset_digest(layout.train_records(records), root, mtimes=False)
  model_dirs = {s.key: os.path.join(workdir, "models", s.key) for s in trained}
  actions: dict[str, dict[str, str]] = {s.key: {} for s in specs}
  for i, spec in enumerate(trained, 1):
    log("train", f"{spec.name} ({i}/{len(trained)}) in {model_dirs[spec.key]}")
    t0 = time.perf_counter()
    actions[spec.key]["train"] = ensure_trained(spec, model_dirs[spec.key], train_digest, progress=bars)
    log("train", f"{spec.name}: {actions[spec.key]['train']} ({time.perf_counter() - t0:.1f} s)")
  for i, spec in enumerate(trained, 1):
    log("embed", f"{spec.name} ({i}/{len(trained)}), {'all layers' if spec.layers == 'all' else 'final layer'}")
    t0 = time.perf_counter()
    actions[spec.key]["embed"] = ensure_embedded(spec, model_dirs[spec.key], digest, all_layers=spec.layers == "all",
                                                 progress=bars)
    log("embed", f"{spec.name}: {actions[spec.key]['embed']} ({time.perf_counter() - t0:.1f} s)")
  return model_dirs, actions


def score_models(specs: Sequence[systems.ModelSpec], model_dirs: dict[str, str],
                 records: Sequence[records_lib.ClipRecord], scores_dir: str, log: Progress, *,
                 labelled: bool) -> dict[str, ModelResult]:
  """Fits each model's scorer on the training clips of `records`, scores and evaluates its test clips."""
  train_idx = [i for i, r in enumerate(records) if systems.is_train_clip(r)]
  test_idx = [i for i, r in enumerate(records) if systems.is_test_clip(r)]
  train_records, test_records = [records[i] for i in train_idx], [records[i] for i in test_idx]
  embeddings = {k: load_embeddings(d, records) for k, d in model_dirs.items()}
  os.makedirs(scores_dir, exist_ok=True)
  models = {}
  for spec in specs:
    what = (f"concatenation of {', '.join(spec.sources)}" if spec.sources
            else "all layers" if spec.layers == "all" else "final layer")
    log("score", f"{spec.name}: {what}, SMOTE + cosine {spec.scorer['k']}-NN")
    x = systems.scorer_vectors(spec, embeddings)
    scorer = detector.fit(x[train_idx], train_records, spec.scorer)
    scores = detector.score(scorer, x[test_idx], test_records)
    scorer.save(os.path.join(scores_dir, f"{spec.key}_scorer.npz"))
    np.savez(os.path.join(scores_dir, f"{spec.key}_test.npz"), raw=scores.raw, normalized=scores.normalized,
             decisions=scores.decisions, nearest_train_clip=scores.nearest_train_clip,
             paths=np.array([r.path for r in test_records]))
    evaluation = evaluate.evaluate_records(test_records, scores.normalized, scores.decisions) if labelled else None
    models[spec.key] = ModelResult(spec, scorer, scores, evaluation)
  return models


def fuse_systems(config: ml_collections.ConfigDict, system_list: Sequence[systems.SystemSpec],
                 models: dict[str, ModelResult], test_records: Sequence[records_lib.ClipRecord], log: Progress, *,
                 labelled: bool) -> dict[str, SystemResult]:
  """Each fixed-weight system, plus (on labelled clips, `config.grid_step` > 0) the grid-searched one."""
  scorers = {k: m.scorer for k, m in models.items()}
  normalized = {k: m.scores.normalized for k, m in models.items()}

  def fused_result(spec: systems.SystemSpec) -> SystemResult:
    fused = systems.fuse_system(spec, scorers, normalized, test_records, threshold_method=config.threshold_method,
                                threshold_quantile=config.threshold_quantile)
    evaluation = evaluate.evaluate_records(test_records, fused.scores, fused.decisions) if labelled else None
    return SystemResult(spec, fused, evaluation)

  results: dict[str, SystemResult] = {}
  for spec in system_list:
    log("fuse", spec.name + (f" ({spec.note})" if spec.note else ""))
    results[spec.name] = fused_result(spec) if any(spec.weights.values()) else SystemResult(spec, None, None)
  if labelled and config.grid_step:
    keys = list(models)
    grid = fusion.simplex_grid(len(keys), config.grid_step)
    log("fuse", f"{GRID_SYSTEM}: searching {len(grid)} weight vectors (step {config.grid_step}) on the labelled "
        "test clips")
    best, _, _ = fusion.grid_search([normalized[k] for k in keys], evaluate.official_score_objective(test_records),
                                    weights=grid)
    results[GRID_SYSTEM] = fused_result(systems.SystemSpec(
        GRID_SYSTEM, dict(zip(keys, best.tolist())),
        note="weights chosen on the labelled test clips (an upper bound, not a fair system)"))
  return results


def format_tables(models: dict[str, ModelResult], results: dict[str, SystemResult]) -> str:
  """Table 1, Table 3 and (apart) the grid-searched system, as markdown with captions."""
  names = {k: m.spec.name for k, m in models.items()}
  fixed = [r for n, r in results.items() if n != GRID_SYSTEM]
  tables = ("Table 1: harmonic mean of AUC (source), AUC (target) and pAUC per machine type (%)\n\n"
            + format_table1(list(models.values()))
            + "\n\nTable 3: fused systems, harmonic means over all sections (%)\n\n" + format_table3(fixed, names))
  if GRID_SYSTEM in results:
    tables += ("\n\nGrid-searched weights (chosen on the same labelled test clips: an upper bound, not a "
               "system)\n\n" + format_table3([results[GRID_SYSTEM]], names))
  return tables


def run(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True,
        bars: bool | None = None) -> PipelineResult:
  """Runs every stage (see the module docstring) and returns what it produced.

  Args:
    config: a pipeline config (`configs/pipeline_base.py`).
    workdir: output folder; one subfolder per trained model under `models/`.
    progress: print stage lines; `bars`: also show the training/embedding progress bars (default: progress).
  """
  log = Progress(progress)
  started, stage_s, t0 = run_info.utc_now(), {}, time.perf_counter()

  def stage_done(name: str, since: float) -> float:
    now = time.perf_counter()
    stage_s[name] = now - since
    return now

  bars = progress if bars is None else bars
  workdir = os.path.abspath(workdir)
  if not config.data.root:
    raise ValueError("config.data.root is empty: pass --config.data.root=DATASET (a DCASE Task 2 layout)")
  root = os.path.abspath(config.data.root)
  specs = systems.model_specs(config)
  system_list = systems.system_specs(config, specs)
  log("setup", f"{len(specs)} models ({', '.join(s.name for s in specs)}), dataset {root}, workdir {workdir}")
  records = layout.scan_dataset(root)
  train_records = [r for r in records if systems.is_train_clip(r)]
  test_records = [r for r in records if systems.is_test_clip(r)]
  if not train_records or not test_records:
    raise ValueError(f"{root}: need train and test clips, found {len(train_records)} train and "
                     f"{len(test_records)} test machine clips")
  labelled = all(r.label in (records_lib.NORMAL, records_lib.ANOMALY) and r.domain is not None
                 for r in test_records)
  os.makedirs(workdir, exist_ok=True)

  t = time.perf_counter()
  model_dirs, actions = train_and_embed(specs, workdir, records, root, log, bars=bars)
  t = stage_done("train+embed", t)
  models = score_models(specs, model_dirs, records, os.path.join(workdir, "scores"), log, labelled=labelled)
  t = stage_done("score", t)
  results = fuse_systems(config, system_list, models, test_records, log, labelled=labelled)
  t = stage_done("fuse", t)
  for name, r in results.items():
    if r.fused is not None:
      r.submission_dir = os.path.join(workdir, "submissions", name)
      eval_files.write_submission(r.submission_dir, test_records, r.fused.scores, r.fused.decisions)
  log("write", f"submission folders in {os.path.join(workdir, 'submissions')}: "
      f"{', '.join(n for n, r in results.items() if r.submission_dir)}")
  tables = format_tables(models, results)
  with open(os.path.join(workdir, "tables.md"), "w") as f:
    f.write(tables + "\n")

  detector_dir = ""
  if config.export:
    from asd_jax import detector_export  # pylint: disable=g-import-not-at-top  (JAX side, only to export)

    system = results.get(config.system)
    if system is None or system.fused is None:
      raise ValueError(f"config.system={config.system!r} is not a system of this run "
                       f"(have {sorted(n for n, r in results.items() if r.fused is not None)})")
    detector_dir = os.path.join(workdir, "detector")
    log("export", f"detector of {config.system} -> {detector_dir}")
    detector_export.export(detector_dir, system=system.spec, specs=specs, model_dirs=model_dirs,
                           scorers={k: m.scorer for k, m in models.items()}, thresholds=system.fused.thresholds,
                           train_records=train_records, root=root, threshold_method=config.threshold_method,
                           threshold_quantile=config.threshold_quantile)
    t = stage_done("export", t)

  summary = {
      "dataset": root, "labelled": labelled, "actions": actions,
      "models": {k: {"name": m.spec.name, "layers": m.spec.layers, "sources": list(m.spec.sources),
                     "evaluation": _evaluation_json(m.evaluation)} for k, m in models.items()},
      "systems": {n: {"weights": r.spec.weights, "reduced": r.spec.reduced, "note": r.spec.note,
                      "submission": r.submission_dir, "evaluation": _evaluation_json(r.evaluation)}
                  for n, r in results.items()},
      "detector": detector_dir,
  }
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(summary, f, indent=1)
  run_info.write(workdir, config=_config_json(config), started=started, wall_s=time.perf_counter() - t0,
                 stage_s=stage_s)
  log("done", f"tables in {os.path.join(workdir, 'tables.md')}, details in {os.path.join(workdir, 'results.json')}")
  return PipelineResult(workdir=workdir, test_records=test_records, train_records=train_records, models=models,
                        systems=results, actions=actions, tables=tables, detector_dir=detector_dir)


def define_flags() -> None:
  """Defines this CLI's flags; called only when run as a program (see `asd_jax.embed.define_flags`)."""
  config_flags.DEFINE_config_file("config", None, "Pipeline config (configs/system1.py, "
                                  "configs/demo_pipeline.py, ...).")
  flags.DEFINE_string("workdir", None, "Output folder: models/, scores/, submissions/, detector/.")
  flags.DEFINE_boolean("bars", True, "Show the training and embedding progress bars.")
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO; the stage lines say enough.
  result = run(flags.FLAGS.config, flags.FLAGS.workdir, progress=True, bars=flags.FLAGS.bars)
  print()
  print(result.tables)


if __name__ == "__main__":
  define_flags()
  cli.run(main)  # app.run; bad input (dataset, config, workdir of another model) exits with "error: <message>"
