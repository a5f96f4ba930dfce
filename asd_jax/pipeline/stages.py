"""The pipeline's stages, in order: train, embed, score, fuse, write, export (see the package docstring); every
file they write or read goes through `workdir` (the workdir's layout).

Training health (issue 22): after pre-training and after each fine-tuning run the stages read the run's
`metrics.jsonl` and warn, naming the model, when the pre-training teacher hardly moved
(`pretraining.health.teacher_warning`) or a fine-tuned model ended near chance (`finetuning.health`); before
training they warn naming the models that read only the start of longer clips. Every warning is printed as a
`warning` line and kept in `results.json` ("warnings"), which the report shows."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from asd_jax import config_checks
from asd_jax import provenance
from asd_jax import workdir_lock
from asd_jax.checkpoints import converted
from asd_jax.audio import wav as wav_lib
from asd_jax.data import digest as digest_lib
from asd_jax.data import layout
from asd_jax.data import records as records_lib
from asd_jax.detector import export as export_lib
from asd_jax.evaluation import files as eval_files
from asd_jax.evaluation import metrics
from asd_jax.evaluation import official
from asd_jax.evaluation import protocol as protocol_lib
from asd_jax.finetuning import fine_tune
from asd_jax.finetuning import health as finetuning_health
from asd_jax.finetuning import restore
from asd_jax.pipeline import cache
from asd_jax.pipeline import results as results_lib
from asd_jax.pipeline import specs as specs_lib
from asd_jax.pipeline import workdir as workdir_lib
from asd_jax.scoring import features
from asd_jax.scoring import fusion
from asd_jax.scoring import scorer as scorer_lib

GRID_SYSTEM = results_lib.GRID_SYSTEM


class Progress:
  """Prints `[  12.3 s] stage  model: what` lines (flushed), so a long run shows where it is, and calls
  `on_line()` after each (the pipeline records its wall time so far: `provenance.json`)."""

  def __init__(self, enabled: bool = True, on_line: Callable[[], None] | None = None):
    self.enabled = enabled
    self.on_line = on_line
    self.start = time.perf_counter()
    self.warnings: list[str] = []  # every `warn` of the run, in order (results.json's "warnings")

  def __call__(self, stage: str, message: str) -> None:
    if self.enabled:
      print(f"[{time.perf_counter() - self.start:7.1f} s] {stage:<7} {message}", flush=True)
    if self.on_line is not None:
      self.on_line()

  def warn(self, message: str) -> None:
    """Prints `message` as a `warning` line (even when not `enabled`: warnings are never silent) and keeps it."""
    self.warnings.append(message)
    print(f"warning: {message}", file=sys.stderr, flush=True)


def pretrain_config(config: ml_collections.ConfigDict, channels: str) -> ml_collections.ConfigDict:
  """The pre-training config `config.pretrain` runs with in a pipeline: a corpus source whose path is `DATA_ROOT`
  ("<data.root>") reads the pipeline's dataset (its test clips left out, as the corpus always does unless a source
  says `include_test`) with the models' channel policy `channels`, unless the source names its own; without its
  own `model.init_checkpoint`, pre-training continues from `config.init.eat` when that is set (the report's
  recipe: continue the released EAT-large)."""
  pre = ml_collections.ConfigDict(config.pretrain.to_dict())
  for source in pre.data.sources.values():
    if source.path == specs_lib.DATA_ROOT:
      source.path = os.path.abspath(config.data.root)
      if not source.get("channels"):
        source.channels = channels
  if not pre.model.init_checkpoint and config.init.eat:
    pre.model.init_checkpoint = config.init.eat
  return pre


def pretrain_eat(config: ml_collections.ConfigDict, workdir: str, log: Progress, *, channels: str,
                 bars: bool) -> ml_collections.ConfigDict:
  """Pre-trains EAT as `config.pretrain` says (`pretrain_config`; resumable, skipped when done) in DIR/pretrain/;
  returns a copy of `config` whose `init.eat` is the exported encoder, so every EAT model without an explicit
  checkpoint (and with `init` left True) starts from it."""
  from asd_jax.pretraining import pretrain  # only runs that pre-train pay for importing it

  pre = pretrain_config(config, channels)
  pretrain_dir = workdir_lib.path(workdir, workdir_lib.PRETRAIN)
  what = f"EAT ({pre.model.init_checkpoint or pre.model.preset + ', random init'}), {pre.train.num_steps} updates"
  log("pretrain", f"{what} in {pretrain_dir}")
  t0 = time.perf_counter()
  if pretrain.is_complete(pre, pretrain_dir):
    action = "cached"
  else:
    pretrain.pretrain(pre, pretrain_dir, progress=bars)
    action = "ran"
  log("pretrain", f"{action} ({time.perf_counter() - t0:.1f} s)")
  warning = teacher_warning(pretrain_dir)
  if warning:
    log.warn(warning)
  config = ml_collections.ConfigDict(config.to_dict())
  config.init.eat = pretrained_eat_dir(workdir)
  return config


def pretrained_eat_dir(workdir: str) -> str:
  """`DIR/pretrain/encoder`: the EAT the pipeline's pre-training exports."""
  from asd_jax.pretraining import pretrain  # only runs that pre-train pay for importing it
  return os.path.join(workdir_lib.path(workdir, workdir_lib.PRETRAIN), pretrain.ENCODER_DIR)


def teacher_warning(pretrain_dir: str, model: str = "EAT pre-training") -> str | None:
  """`pretraining.health.teacher_warning` of the run's `teacher_change` (the last row of its `metrics.jsonl` that
  has one, written at its last step); None when the teacher moved enough or the log has no such row."""
  from asd_jax.pretraining import health as pretraining_health

  log_file = os.path.join(pretrain_dir, workdir_lib.TRAINING_LOG)
  rows = workdir_lib.read_jsonl(log_file) if os.path.isfile(log_file) else []
  changes = [r[pretraining_health.TEACHER_CHANGE] for r in rows if pretraining_health.TEACHER_CHANGE in r]
  return pretraining_health.teacher_warning(float(changes[-1]), model=model) if changes else None


def training_summary(model_dir_: str) -> str:
  """`, loss L, training accuracy A, held-out accuracy H` from the end of a model's `metrics.jsonl` ("" if none)."""
  log_file = os.path.join(model_dir_, workdir_lib.TRAINING_LOG)
  rows = workdir_lib.read_jsonl(log_file) if os.path.isfile(log_file) else []
  losses = [r["loss"] for r in rows if "loss" in r]
  final = [r for r in rows if "train_accuracy" in r]
  parts = [f"loss {losses[-1]:.3f}"] if losses else []
  if final:
    parts.append(f"training accuracy {final[-1]['train_accuracy']:.3f}")
    if "heldout_accuracy" in final[-1]:
      parts.append(f"held-out accuracy {final[-1]['heldout_accuracy']:.3f}")
  return ", " + ", ".join(parts) if parts else ""


def training_warnings(spec: specs_lib.ModelSpec, model_dir_: str) -> tuple[str, ...]:
  """`finetuning.health.check_metrics` on the model's `metrics.jsonl`: why its training looks unhealthy, if it
  does."""
  log_file = os.path.join(model_dir_, workdir_lib.TRAINING_LOG)
  if not os.path.isfile(log_file):
    return ()
  result = finetuning_health.check_metrics(workdir_lib.read_jsonl(log_file), model=spec.name)
  return () if result is None else result.warnings


def clip_length_warnings(specs: Sequence[specs_lib.ModelSpec], records: Sequence[records_lib.ClipRecord]
                         ) -> list[str]:
  """One `finetuning.health.clip_length_warning` per clip length the embedded models read, naming the models."""
  by_length: dict[float, list[str]] = {}
  for spec in specs:
    if spec.embedded and "clip_seconds" in spec.config.get("data", {}):
      by_length.setdefault(float(spec.config.data.clip_seconds), []).append(spec.name)
  if not by_length:
    return []
  durations = [wav_lib.duration_s(r.path) for r in records]
  warnings = [finetuning_health.clip_length_warning(durations, seconds, model=", ".join(names))
              for seconds, names in sorted(by_length.items())]
  return [w for w in warnings if w]


def train_and_embed(specs: Sequence[specs_lib.ModelSpec], workdir: str, records: Sequence[records_lib.ClipRecord],
                    root: str, log: Progress, *, bars: bool) -> dict[str, dict[str, str]]:
  """Trains every fine-tuned model not yet done, then embeds every embedded model whose embeddings are stale;
  returns what was done to each ({key: {"train": "ran" | "cached", "embed": ...}})."""
  t0 = time.perf_counter()
  digests = digest_lib.digests({"clips": records, "fine_tuning": [r for r in records if
                                                                  records_lib.is_fine_tuning_clip(r)]},
                               root, workdir_lib.path(workdir, workdir_lib.HASH_CACHE))
  log("setup", f"content digest of {len(records)} clips ({time.perf_counter() - t0:.1f} s)")
  embedded = [s for s in specs if s.embedded]
  trained = [s for s in embedded if s.trained]
  model_dirs = {s.key: workdir_lib.model_dir(workdir, s.key) for s in embedded}
  actions: dict[str, dict[str, str]] = {s.key: {} for s in specs}
  for i, spec in enumerate(trained, 1):
    log("train", f"{spec.name} ({i}/{len(trained)}) in {model_dirs[spec.key]}")
    t0 = time.perf_counter()
    actions[spec.key]["train"] = cache.ensure_trained(spec, model_dirs[spec.key], digests["fine_tuning"],
                                                      progress=bars,
                                                      hash_cache=workdir_lib.path(workdir, workdir_lib.HASH_CACHE))
    log("train", f"{spec.name}: {actions[spec.key]['train']} ({time.perf_counter() - t0:.1f} s)"
        f"{training_summary(model_dirs[spec.key])}")
    for warning in training_warnings(spec, model_dirs[spec.key]):
      log.warn(warning)
  for i, spec in enumerate(embedded, 1):
    what = "all layers" if spec.all_layers else "final layer"
    log("embed", f"{spec.name} ({i}/{len(embedded)}), {what}{', no training' if not spec.trained else ''}")
    t0 = time.perf_counter()
    actions[spec.key]["embed"] = cache.ensure_embedded(spec, model_dirs[spec.key], digests["clips"], progress=bars)
    log("embed", f"{spec.name}: {actions[spec.key]['embed']} ({time.perf_counter() - t0:.1f} s)")
  return actions


def score_models(specs: Sequence[specs_lib.ModelSpec], workdir: str, records: Sequence[records_lib.ClipRecord],
                 log: Progress) -> dict[str, results_lib.ModelResult]:
  """Fits each model's scorer on the memory-bank clips of `records`, scores the test clips and writes both (the
  evaluation comes later, `evaluate`)."""
  bank_idx = [i for i, r in enumerate(records) if records_lib.is_bank_clip(r)]
  test_idx = [i for i, r in enumerate(records) if records_lib.is_test_clip(r)]
  bank_records, test_records = [records[i] for i in bank_idx], [records[i] for i in test_idx]
  embeddings = {s.key: workdir_lib.read_embeddings(workdir, s.key, records) for s in specs if s.embedded}
  scorers, vectors = {}, {}
  for spec in specs:
    what = (f"concatenation of {', '.join(spec.sources)}" if spec.sources
            else "all layers" if spec.all_layers else "final layer")
    log("score", f"{spec.name}: {what}, SMOTE + cosine {spec.scorer['k']}-NN")
    x = features.model_vectors(spec.key, embeddings, layers=spec.layers, sources=spec.sources)
    scorers[spec.key] = scorer_lib.fit(x[bank_idx], bank_records, spec.scorer)
    vectors[spec.key] = x[test_idx]
  model_scores = fusion.score_models(scorers, vectors, test_records)
  models = {}
  for spec in specs:
    scores = model_scores[spec.key].scores
    workdir_lib.write_scores(workdir, spec.key, scorers[spec.key], scores, test_records)
    models[spec.key] = results_lib.ModelResult(spec, scorers[spec.key], model_scores[spec.key], None)
  return models


def _fused_result(config: ml_collections.ConfigDict, spec: specs_lib.SystemSpec,
                  models: dict[str, results_lib.ModelResult], test_records: Sequence[records_lib.ClipRecord],
                  workdir: str) -> results_lib.SystemResult:
  """One system's fused scores (thresholds fitted on its fused training scores), written to the workdir."""
  scorers = {k: m.scorer for k, m in models.items()}
  thresholds = fusion.fit_thresholds(spec.weights, scorers, method=config.threshold_method,
                                     quantile=config.threshold_quantile)
  fused = fusion.score_system(spec.weights, scorers, {k: m.scores for k, m in models.items()}, test_records,
                              thresholds)
  workdir_lib.write_fused(workdir, spec.name, fused, test_records)
  return results_lib.SystemResult(spec, fused, None)


def fuse_systems(config: ml_collections.ConfigDict, system_list: Sequence[specs_lib.SystemSpec],
                 models: dict[str, results_lib.ModelResult], test_records: Sequence[records_lib.ClipRecord],
                 workdir: str, log: Progress) -> dict[str, results_lib.SystemResult]:
  """Each fixed-weight system's fused scores (the grid-searched one needs the evaluation: `evaluate`)."""
  results: dict[str, results_lib.SystemResult] = {}
  for spec in system_list:
    log("fuse", spec.name + (f" ({spec.note})" if spec.note else ""))
    results[spec.name] = (_fused_result(config, spec, models, test_records, workdir) if any(spec.weights.values())
                          else results_lib.SystemResult(spec, None, None))
  return results


def write_submissions(results: dict[str, results_lib.SystemResult], test_records: Sequence[records_lib.ClipRecord],
                      workdir: str) -> None:
  """The DCASE submission folder of every fused system that has none yet (`DIR/submissions/<system>/`)."""
  for name, r in results.items():
    if r.fused is not None and not r.submission_dir:
      r.submission_dir = workdir_lib.submission_dir(workdir, name)
      eval_files.write_submission(r.submission_dir, test_records, r.fused.scores, r.fused.decisions)


def check_evaluation(test_records: Sequence[records_lib.ClipRecord], warn: Callable[[str], None]
                     ) -> tuple[protocol_lib.Protocol, dict[tuple[str, str], str]]:
  """The year's protocol of the test clips (`evaluation.protocol.detect`: a ValueError when they mix years) and
  the sections it cannot evaluate, each warned about once (before any compute)."""
  protocol = protocol_lib.detect(r.path for r in test_records)
  left_out = official.unevaluable_sections(test_records, protocol=protocol)
  for (machine, section), problem in left_out.items():
    warn(metrics.warning_line(protocol, machine, section, problem))
  return protocol, left_out


def evaluate(config: ml_collections.ConfigDict, models: dict[str, results_lib.ModelResult],
             results: dict[str, results_lib.SystemResult], test_records: Sequence[records_lib.ClipRecord],
             workdir: str, log: Progress, *, protocol: protocol_lib.Protocol, evaluable: bool) -> None:
  """The official metrics of every model and fused system under the year's `protocol` (a section it cannot evaluate
  is a blank row; no evaluation at all unless some section is `evaluable`), then, when some section can be evaluated
  and `config.grid_step` > 0, the system whose weights are grid-searched on the labelled test clips over the
  systems' models (reference rows are
  never searched), with its fused scores and submission."""
  if not evaluable:
    log("eval", "no section can be evaluated: no metrics")
    return
  log("eval", f"{protocol.title} protocol, per {protocol.unit}")
  for m in models.values():
    m.evaluation = official.evaluate_records(test_records, m.scores.scores.normalized, m.scores.scores.decisions,
                                             protocol=protocol)
  for r in results.values():
    if r.fused is not None:
      r.evaluation = official.evaluate_records(test_records, r.fused.scores, r.fused.decisions, protocol=protocol)
  keys = [k for k, m in models.items() if not m.spec.reference]
  if config.grid_step and keys and len(official.unevaluable_sections(test_records, protocol=protocol)) == len(
      {(r.machine, r.section) for r in test_records}):
    # A sample too small to evaluate (e.g. 2 test clips a section): no official score to search on.
    log("fuse", f"{GRID_SYSTEM}: skipped, no section of the test clips can be evaluated")
  elif config.grid_step and keys:
    grid = fusion.simplex_grid(len(keys), config.grid_step)
    log("fuse", f"{GRID_SYSTEM}: searching {len(grid)} weight vectors (step {config.grid_step}) on the labelled "
        "test clips")
    best, _, _ = fusion.grid_search([models[k].scores.scores.normalized for k in keys],
                                    official.official_score_objective(test_records, protocol=protocol), weights=grid)
    spec = specs_lib.SystemSpec(GRID_SYSTEM, dict(zip(keys, best.tolist())),
                                note="weights chosen on the labelled test clips (an upper bound, not a fair system)")
    grid_result = _fused_result(config, spec, models, test_records, workdir)
    grid_result.evaluation = official.evaluate_records(test_records, grid_result.fused.scores,
                                                       grid_result.fused.decisions, protocol=protocol)
    results[GRID_SYSTEM] = grid_result
    write_submissions(results, test_records, workdir)


def exported_models(specs: Sequence[specs_lib.ModelSpec], workdir: str, models: dict[str, results_lib.ModelResult],
                    needed: set[str]) -> list[export_lib.ExportedModel]:
  """The `needed` models as they were embedded: the same parameters (read by the same function as the
  embedding step; a LoRA model's factors apart from its base, `restore.trained_tree`) and the batch size the
  embeddings were made with."""
  out = []
  for spec in specs:
    if spec.key not in needed:
      continue
    network = params = config = factors = alpha = None
    num_classes = 1
    if spec.embedded:
      d = workdir_lib.model_dir(workdir, spec.key)
      if spec.trained:
        trained = restore.trained_tree(spec.config, d)
        if trained is None:
          raise ValueError(f"model {spec.key}: no training checkpoint in {d} to export")
        network, tree, alpha, _ = trained
        params, factors = tree["model"], tree.get("lora") or None  # LoRA: base + factors, merged on loading
        with open(os.path.join(d, fine_tune.LABEL_SPACE)) as f:
          num_classes = len(json.load(f)["classes"])
      else:
        network, params, _ = restore.untrained_params(spec.config)
      config = spec.config.copy_and_resolve_references()
      config.embed.batch_size = workdir_lib.read_embedding_batch_size(workdir, spec.key)
      config.embed.autotune = False
    out.append(export_lib.ExportedModel(key=spec.key, name=spec.name, layers=spec.layers, sources=spec.sources,
                                          all_layers=spec.all_layers, config=config, network=network, params=params,
                                          num_classes=num_classes, scorer=models[spec.key].scorer, lora=factors,
                                          lora_alpha=alpha))
  return out


def run(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True,
        bars: bool | None = None) -> results_lib.PipelineResult:
  """Runs every stage (see the package docstring) and returns what it produced.

  Args:
    config: a pipeline config (`configs/pipeline_base.py`).
    workdir: output folder; one subfolder per embedded model under `models/`.
    progress: print stage lines; `bars`: also show the training/embedding progress bars (default: progress).
  """
  config_checks.check(config)
  workdir = os.path.abspath(workdir)
  if not config.data.root:
    raise ValueError("config.data.root is empty: pass --config.data.root=DATASET (a DCASE Task 2 layout)")
  os.makedirs(workdir, exist_ok=True)
  with workdir_lock.hold(workdir, "pipeline"):
    return _run(config, workdir, progress=progress, bars=progress if bars is None else bars)


def _digest(start: specs_lib.EncoderStart) -> str:
  """The checkpoint's digest ("" for random weights, or a pre-training export not written yet)."""
  if start.source == specs_lib.RANDOM or (start.source == specs_lib.PRETRAINING and not os.path.exists(start.path)):
    return ""
  try:
    return converted.checkpoint_digest(start.path)
  except FileNotFoundError as e:
    raise ValueError(f"model {start.key} ({start.name}): its {start.encoder} checkpoint {e} (config.{start.field}); "
                     "give the converted checkpoint's path (README, \"Using it on real data\")") from None


def _weights_json(starts: Sequence[specs_lib.EncoderStart], digests: Sequence[str],
                  pretraining: dict[str, Any] | None) -> dict[str, Any]:
  """provenance.json's "weights": {model key: {encoder: {"source", "path", "sha256"} or {"source", "seed", "why"}}},
  and "pretraining" (where the pre-training run started) when there is one. `digests`: of `starts`, as found up
  front; a pre-training export, written since, is digested now."""
  out: dict[str, Any] = {}
  for start, digest in zip(starts, digests):
    digest = _digest(start) if start.source == specs_lib.PRETRAINING else digest
    out.setdefault(start.key, {})[start.encoder] = start.to_json_dict(digest)
  if pretraining is not None:
    out["pretraining"] = pretraining
  return out


def _pretraining_start(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
  """Where the pipeline's EAT pre-training starts (its own `model.init_checkpoint`, else `init.eat`, else random)."""
  if config.get("pretrain") is None:
    return None
  path = config.pretrain.model.init_checkpoint or config.init.eat
  if not path:
    return {"source": specs_lib.RANDOM, "seed": int(config.pretrain.get("seed", 0)),
            "why": "pre-training from scratch (pretrain.model.init_checkpoint and init.eat are empty)"}
  try:
    return {"source": specs_lib.CHECKPOINT, "path": path, "sha256": converted.checkpoint_digest(path)}
  except FileNotFoundError as e:
    field = "pretrain.model.init_checkpoint" if config.pretrain.model.init_checkpoint else "init.eat"
    raise ValueError(f"the pre-training's starting checkpoint {e} (config.{field})") from None


def _run(config: ml_collections.ConfigDict, workdir: str, *, progress: bool, bars: bool) -> results_lib.PipelineResult:
  started, stage_s, t0 = provenance.utc_now(), {}, time.perf_counter()
  earlier = workdir_lib.earlier_invocations(workdir)

  weights: dict[str, Any] = {}  # every encoder's starting weights, once checked

  def record(finished: bool = False) -> None:
    """provenance.json with this invocation's time so far: a killed invocation keeps it up to its last line."""
    workdir_lib.write_provenance(workdir, config=json.loads(config.to_json_best_effort()), started=started,
                                 wall_s=time.perf_counter() - t0, stage_s=stage_s, earlier=earlier,
                                 finished=finished, weights=weights)

  record()
  log = Progress(progress, on_line=record)
  warn = log.warn

  def stage_done(name: str, since: float) -> float:
    now = time.perf_counter()
    stage_s[name] = now - since
    return now

  # 1. Everything that can be checked before any compute: the models and systems, every encoder's starting weights,
  # the dataset (names, wav headers, training clips), what can be evaluated and how well each section is normalised.
  root = os.path.abspath(config.data.root)
  pretraining = _pretraining_start(config)
  planned = config
  if pretraining is not None:  # every EAT model without its own checkpoint starts from the pre-training export
    planned = ml_collections.ConfigDict(config.to_dict())
    planned.init.eat = pretrained_eat_dir(workdir)
  specs = specs_lib.model_specs(planned)
  channels = specs_lib.channel_policy(specs)  # one policy for every model
  system_list = specs_lib.system_specs(planned, specs)
  starts = specs_lib.starting_weights(planned, specs, pretrained_eat=planned.init.eat if pretraining else "")
  log("setup", f"{len(specs)} models ({', '.join(s.name for s in specs)}), dataset {root}, channels {channels}, "
      f"workdir {workdir}")
  if pretraining is not None:
    log("weights", "EAT pre-training starts from " + (
        f"random weights (seed {pretraining['seed']})" if pretraining["source"] == specs_lib.RANDOM
        else f"{pretraining['path']} ({pretraining['sha256']})"))
  digests = [_digest(start) for start in starts]  # a checkpoint that is not there: an error, here
  weights.update(_weights_json(starts, digests, pretraining))
  for start, digest in zip(starts, digests):
    log("weights", f"{start.name}: {start.describe(digest)}")
  # Every name, wav header (its channel count against the policy), float clip's samples and machine folder
  # (training clips in each) checked before any compute.
  records = layout.scan_dataset(root, require_train=True, channels=channels, finite=True)
  train_records = [r for r in records if records_lib.is_bank_clip(r)]
  test_records = [r for r in records if records_lib.is_test_clip(r)]
  if not train_records or not test_records:
    raise ValueError(f"{root}: need train and test clips, found {len(train_records)} train and "
                     f"{len(test_records)} test machine clips")
  protocol, left_out = check_evaluation(test_records, warn)
  sections = records_lib.group_by_section(test_records)
  evaluable = len(left_out) < len(sections)
  if any(s.scorer["normalization"] == "loo" for s in specs):
    for (machine, section), idx in records_lib.group_by_section(train_records).items():
      line = scorer_lib.few_clips_warning(machine, section, len(idx))
      if line:
        warn(line)

  for warning in clip_length_warnings(specs, records):
    warn(warning)

  # 2. The compute and the durable outputs: models, embeddings, scores, fused scores, submissions, the detector.
  if pretraining is not None:
    t = time.perf_counter()
    config = pretrain_eat(config, workdir, log, channels=channels, bars=bars)  # init.eat: the export, as planned
    stage_done("pretrain", t)
  config = planned
  t = time.perf_counter()
  actions = train_and_embed(specs, workdir, records, root, log, bars=bars)
  t = stage_done("train+embed", t)
  models = score_models(specs, workdir, records, log)
  t = stage_done("score", t)
  results = fuse_systems(config, system_list, models, test_records, workdir, log)
  write_submissions(results, test_records, workdir)
  t = stage_done("fuse", t)
  detector_dir = ""
  if config.export:
    system = results.get(config.system)
    if system is None or system.fused is None:
      raise ValueError(f"config.system={config.system!r} is not a system of this run "
                       f"(have {sorted(n for n, r in results.items() if r.fused is not None)})")
    detector_dir = workdir_lib.path(workdir, workdir_lib.DETECTOR)
    log("export", f"detector of {config.system} -> {detector_dir}")
    needed = export_lib.needed_models(system.spec.weights, {s.key: s.sources for s in specs})
    export_lib.export(detector_dir, system=system.spec.name, weights=system.spec.weights,
                      models=exported_models(specs, workdir, models, needed), thresholds=system.fused.thresholds,
                      root=root, threshold_method=config.threshold_method,
                      threshold_quantile=config.threshold_quantile, note=system.spec.note)
    t = stage_done("export", t)

  # 3. The evaluation (blank rows where a section cannot be evaluated), the tables and the records of the run.
  evaluate(config, models, results, test_records, workdir, log, protocol=protocol, evaluable=evaluable)
  log("write", f"submission folders in {workdir_lib.path(workdir, workdir_lib.SUBMISSIONS)}: "
      f"{', '.join(n for n, r in results.items() if r.submission_dir)}")
  tables = results_lib.format_tables(models, results, protocol=protocol)
  workdir_lib.write_tables(workdir, tables)
  stage_done("evaluate", t)
  result = results_lib.PipelineResult(workdir=workdir, test_records=test_records, train_records=train_records,
                                      models=models, systems=results, actions=actions, tables=tables,
                                      detector_dir=detector_dir, stage_s=stage_s, protocol=protocol,
                                      warnings=list(log.warnings))
  workdir_lib.write_results(workdir, results_lib.summary(result, dataset=root, labelled=evaluable))
  weights.update(_weights_json(starts, digests, pretraining))  # a pre-training export is digested now
  log("done", f"tables in {workdir_lib.path(workdir, workdir_lib.TABLES)}, details in "
      f"{workdir_lib.path(workdir, workdir_lib.RESULTS)}")
  record(finished=True)
  return result
