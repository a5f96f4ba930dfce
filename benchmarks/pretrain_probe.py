r"""What pre-training gives a frozen encoder: pre-train with a few seeds, then probe the encoders on held-out clips.

  python -m benchmarks.pretrain_probe --data_root=work/synth_dcase --workdir=/tmp/pretrain_probe \
      --config=configs/pretrain_demo.py --config.data.sources.synth_past.path=work/synth_past [--seeds=1,2,3]
  python -m benchmarks.pretrain_probe --data_root=work/synth_dcase --workdir=DIR --encoders=NAME:PATH,...

For each seed: pre-trains `--config` (seed set to it; skipped when `<workdir>/seed<k>` holds a finished run)
with the teacher exported, writes the run's initial encoder (upstream's initialisation as the trainer draws it:
student = teacher at update 0) to `seed<k>/init`, and embeds the dataset with each frozen encoder (the demo's
frozen EAT config, `configs/demo_pipeline.shrink_frozen`, mean-pooled per layer):
  random   the pipeline's "EAT (frozen, random init)": the Flax module's own initialisation (seed k);
  init     the pre-training run's initial encoder (what pre-training starts from);
  student  the exported encoder (what the pipeline fine-tunes and embeds as "EAT (frozen, pre-trained)");
  teacher  the final EMA teacher.
Then `asd_jax.pretraining.probe` on each (fit on `train/`, scored on normal `test/` clips), the teacher's and
student's relative change from `init` (`asd_jax.pretraining.health.relative_change`) and the run's curves
(first and last logged loss_regression, target_var, pred_var, ema_decay, model_norm, ema_norm). Prints one table
row per seed and encoder and the mean +- std over seeds; writes `<workdir>/probe_<pool>.json`.
`--encoders=NAME:PATH,...` probes given converted EAT checkpoints instead (no pre-training; PATH "random"
is the random init, "logmel" the pipeline's log-mel mean/std row).
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
ENCODERS = ("random", "init", "student", "teacher")
CURVES = ("loss_regression", "loss_cls", "target_var", "pred_var", "ema_decay", "model_norm", "ema_norm")


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", "configs/pretrain_demo.py", "Pre-training config.")
  flags.DEFINE_string("data_root", "work/synth_dcase", "Labelled DCASE-layout dataset to probe on.")
  flags.DEFINE_string("workdir", None, "Runs, embeddings and probe.json go here.")
  flags.DEFINE_list("seeds", ["1", "2", "3"], "Pre-training seeds.")
  flags.DEFINE_list("encoders", [], "NAME:PATH of converted EAT checkpoints to probe instead of pre-training.")
  flags.DEFINE_list("probe", list(ENCODERS), "Which of random, init, student, teacher to embed and probe.")
  flags.DEFINE_enum("pool", "mean", ["mean", "cls"], "Token pooling of the embeddings (the pipeline's: mean).")
  flags.DEFINE_bool("every_checkpoint", False, "Also probe student and teacher at every kept checkpoint (set "
                    "--config.train.checkpoint_every and --config.train.keep_checkpoints).")
  flags.DEFINE_float("C", 1.0, "Inverse L2 strength of the linear probe.")
  flags.mark_flag_as_required("workdir")


def frozen_config(data_root: str, checkpoint: str, seed: int, pool: str = "mean"):
  from configs import demo_pipeline
  from configs import feat
  from configs import pipeline_base

  if checkpoint == "logmel":  # the pipeline's non-learned reference row: log-mel mean and std over time
    c = demo_pipeline.shrink_frozen(pipeline_base.log_mel_config())
    c.data.root = data_root
    return c
  c = demo_pipeline.shrink_frozen(feat.get_config())
  c.data.root = data_root
  c.model.preset = "tiny"
  c.model.init_checkpoint = checkpoint
  c.seed = seed
  c.model.pool = pool
  return c


def embed(data_root: str, checkpoint: str, seed: int, out: str, pool: str = "mean"):
  """The dataset's embeddings with a frozen EAT (`checkpoint` "" = random init), cached in `out`."""
  from asd_jax.data import layout
  from asd_jax.embedding import store
  from asd_jax.embedding import embed as embed_lib

  records = layout.scan_dataset(os.path.abspath(data_root))
  if not os.path.exists(out):
    embed_lib.embed(frozen_config(data_root, checkpoint, seed, pool), os.path.dirname(out), out=out,
                        progress=False, frozen=True)
  return store.read(out, records), records


def curves(run_dir: str) -> dict[str, list[float]]:
  from asd_jax.training import train_log

  rows = [r for r in train_log.read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if "loss" in r]
  return {k: [rows[0][k], rows[-1][k]] for k in CURVES if k in rows[0]}


def pretrain_seed(config, seed: int, run_dir: str) -> dict:
  """Pre-trains (unless done) and exports init, student and teacher; returns changes, curves and times."""
  import jax
  import ml_collections

  from asd_jax.models import eat
  from asd_jax.pretraining import health
  from asd_jax.pretraining import pretrain as pretrain_lib

  c = ml_collections.ConfigDict(config.to_dict())
  c.seed = seed
  info = {"seed": seed}
  if not pretrain_lib.is_complete(c, run_dir):
    t0, c0 = time.perf_counter(), time.process_time()
    pretrain_lib.pretrain(c, run_dir, export_teacher=True, progress=False)
    info.update(pretrain_wall_s=time.perf_counter() - t0, pretrain_cpu_s=time.process_time() - c0)
  init_dir = os.path.join(run_dir, "init")
  if not os.path.isdir(init_dir):
    init_rng, _ = jax.random.split(jax.random.key(seed))  # as pretrain_lib._pretrain draws it
    settings, student, _, _, _ = pretrain_lib.initial_model(c, init_rng)
    eat.save_converted(init_dir, settings.encoder, jax.device_get(student))
  params = {name: eat.load(os.path.join(run_dir, d))[1]
            for name, d in (("init", "init"), ("student", pretrain_lib.ENCODER_DIR), ("teacher", pretrain_lib.TEACHER_DIR))}
  info["teacher_change"] = health.relative_change(params["init"], params["teacher"])
  info["student_change"] = health.relative_change(params["init"], params["student"])
  info["start_weight"] = health.start_weight(c.train.num_steps, c.ema.decay, c.ema.end_decay, c.ema.anneal_end_step)
  info["curves"] = curves(run_dir)
  return info


def export_checkpoints(config, seed: int, run_dir: str) -> list[int]:
  """Exports student and teacher of every kept checkpoint step below the last to `run_dir/step<s>/`."""
  import jax
  import ml_collections

  from asd_jax.checkpoints import train_state
  from asd_jax.pretraining import pretrain as pretrain_lib
  from asd_jax.runtime import sharding as shd
  from asd_jax.training import loop

  c = ml_collections.ConfigDict(config.to_dict())
  c.seed = seed
  ckpt = train_state.Checkpointer(loop.checkpoint_dir(run_dir), keep=c.train.keep_checkpoints)
  steps = []
  try:
    for step in sorted(ckpt._manager.all_steps()):  # noqa: SLF001  (a benchmark reading its own run)
      out = os.path.join(run_dir, f"step{step}")
      if step >= c.train.num_steps:
        continue
      steps.append(step)
      if os.path.isdir(os.path.join(out, pretrain_lib.TEACHER_DIR)):
        continue
      settings, setup, _ = pretrain_lib.build(c, jax.random.split(jax.random.key(seed))[0], abstract=True)
      state, _, _ = ckpt.restore(train_state.abstract_like(setup.state, shd.replicated(shd.data_mesh())), step)
      pretrain_lib.export(state, settings, out, teacher=True)
  finally:
    ckpt.close()
  return steps


def main(argv):
  del argv
  from asd_jax import cli
  from asd_jax.pretraining import probe
  from asd_jax.pretraining import pretrain as pretrain_lib

  cli.quiet_by_default()
  workdir = os.path.abspath(FLAGS.workdir)
  os.makedirs(workdir, exist_ok=True)
  results = []
  if FLAGS.encoders:
    for entry in FLAGS.encoders:
      name, _, path = entry.partition(":")
      arrays, records = embed(FLAGS.data_root, "" if path == "random" else path, 1,
                              os.path.join(workdir, f"emb_{name}_{FLAGS.pool}", "embeddings.npz"), FLAGS.pool)
      results.append({"encoder": name, "probe": probe.probe_embeddings(arrays, records, C=FLAGS.C)})
  for seed in map(int, [] if FLAGS.encoders else FLAGS.seeds):
    run_dir = os.path.join(workdir, f"seed{seed}")
    info = pretrain_seed(FLAGS.config, seed, run_dir)
    print(json.dumps(info), flush=True)
    for name in FLAGS.probe:
      checkpoint = "" if name == "random" else os.path.join(
          run_dir, {"init": "init", "student": pretrain_lib.ENCODER_DIR, "teacher": pretrain_lib.TEACHER_DIR}[name])
      arrays, records = embed(FLAGS.data_root, checkpoint, seed,
                              os.path.join(run_dir, f"emb_{name}" + ("" if FLAGS.pool == "mean" else "_cls"),
                                           "embeddings.npz"), FLAGS.pool)
      results.append({"encoder": name, "seed": seed, "run": info,
                      "probe": probe.probe_embeddings(arrays, records, C=FLAGS.C)})
    if FLAGS.every_checkpoint:
      for step in export_checkpoints(FLAGS.config, seed, run_dir):
        for name, d in (("student", pretrain_lib.ENCODER_DIR), ("teacher", pretrain_lib.TEACHER_DIR)):
          out = os.path.join(run_dir, f"step{step}", f"emb_{name}_{FLAGS.pool}", "embeddings.npz")
          arrays, records = embed(FLAGS.data_root, os.path.join(run_dir, f"step{step}", d), seed, out, FLAGS.pool)
          results.append({"encoder": f"{name}@{step}", "seed": seed,
                          "probe": probe.probe_embeddings(arrays, records, C=FLAGS.C)})
  with open(os.path.join(workdir, f"probe_{FLAGS.pool}.json"), "w") as f:
    json.dump({"config": FLAGS.config.to_dict(), "results": results}, f, indent=1, default=str)
  print(table(results))


def table(results: list[dict]) -> str:
  """Per encoder: accuracy of each task x probe on the final layer and the best single layer, mean +- std."""
  cols = [(task, p) for task in ("machine", "attribute") for p in ("knn", "linear")]
  lines = ["| encoder | feature | " + " | ".join(f"{t} {p}" for t, p in cols) + " | seeds |",
           "|---|---|" + "---|" * (len(cols) + 1)]
  names = list(dict.fromkeys(r["encoder"] for r in results))
  for name in names:
    rows = [r for r in results if r["encoder"] == name]
    for feature in rows[0]["probe"]:
      cells = []
      for task, p in cols:
        vals = np.array([100 * r["probe"][feature][task][p] for r in rows if task in r["probe"][feature]])
        cells.append(f"{vals.mean():.1f} +- {vals.std(ddof=1) if len(vals) > 1 else 0:.1f}" if len(vals) else "-")
      lines.append(f"| {name} | {feature} | " + " | ".join(cells) + f" | {len(rows)} |")
  # Paired by seed: each pre-trained encoder minus the random-init ones of its own seed.
  by_key = {(r["encoder"], r.get("seed")): r for r in results}
  for name in (n for n in names if n.split("@")[0] in ("student", "teacher")):
    for base in ("random", "init"):
      seeds = [r.get("seed") for r in results if r["encoder"] == name and (base, r.get("seed")) in by_key]
      if not seeds:
        continue
      for feature in by_key[(name, seeds[0])]["probe"]:
        cells = []
        for task, p in cols:
          d = np.array([100 * (by_key[(name, s)]["probe"][feature][task][p] - by_key[(base, s)]["probe"][feature][task][p])
                        for s in seeds if task in by_key[(name, s)]["probe"][feature]])
          cells.append(f"{d.mean():+.1f} +- {d.std(ddof=1) if len(d) > 1 else 0:.1f}" if len(d) else "-")
        lines.append(f"| {name} - {base} | {feature} | " + " | ".join(cells) + f" | {len(seeds)} |")
  return "\n".join(lines)


if __name__ == "__main__":
  sys.path.insert(0, os.getcwd())
  define_flags()
  app.run(main)
