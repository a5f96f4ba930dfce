r"""Issue 22's three comparisons, measured through the pipeline's command line on several sets and seeds.

  python -m benchmarks.learn_compare --workdir=work/learn_compare \
      --sets=demo:work/synth_dcase:2,u1:work/synth_u1:2,u2:work/synth_u2:3 --seeds=1,2,3 \
      --model_keys=feat,frozen_eat,feat_random,frozen_eat_random,log_mel \
      --pretrain_root=work/synth_dcase --pretrain_past=work/synth_past
  python -m benchmarks.learn_compare ... --report_only    # tables from the runs already done

  (a) what fine-tuning adds:   FEAT - EAT (frozen, pre-trained); LEAT - EAT (frozen, pre-trained) when run
  (b) what pre-training adds:  EAT (frozen, pre-trained) - EAT (frozen, random init); FEAT - FEAT (random init)
  (c) the systems vs log-mel:  system1..4 - log-mel mean/std (needs every model of the systems in model_keys)

Per seed k (the deciding numbers use several): the demo's EAT pre-training (`configs/pretrain_demo.py`, seed k)
runs ONCE, on `--pretrain_root` (its train and supplemental clips) and `--pretrain_past`, through
`benchmarks.pretrain_probe` (which also exports the teacher and measures its relative change from the run's
initial encoder); every set then runs `python -m asd_jax.pipeline` with `--config` (default
configs/demo_pipeline.py) wrapped by this file's `get_config` (pre-training stage off) and `init.eat` = that encoder, every fine-tuned model's seed and the random-init EAT's seed
set to k, and every model reading `clip_seconds` of each clip (the set's third field: give the set's clip length
so that the whole clip is read). A run whose workdir is complete is reused (the pipeline's own cache); adding
model keys later trains only the new ones.

Prints, per set, a Markdown table of the official score (%) of every model and system per seed with the mean
and the spread (max - min), the differences (a), (b), (c) per seed, and the end of each model's training curve
(final logged loss, training and held-out accuracy), after the pre-training runs' teacher change. Appends
every command with its CPU and wall seconds and load averages to `<workdir>/commands.jsonl`.

What it reads of the pipeline (its only dependence on pipeline internals): the config fields
`models.<key>.train` (main since renamed it `models.<key>.fine_tune`: the script uses whichever the config has),
`models.<key>.frozen`, `<model config>.seed`, `<model config>.data.clip_seconds`, `pretrain`, `init.eat`,
`model_keys`, `export`, `data.root`; and the workdir files `DIR/results.json` (copied to `DIR/results_<keys>.json` after each run and merged, since
each pipeline run rewrites it with its own models only; `models.<key>.evaluation.
official_score`, `systems.<name>.evaluation.official_score`) and `DIR/models/<key>/metrics.jsonl` (rows with
`loss`, `train_accuracy`, `heldout_accuracy`); it waits while `DIR/.lock` (the pipeline's workdir lock) names a live process.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
AB_KEYS = ("feat", "frozen_eat", "feat_random", "frozen_eat_random", "log_mel")
SYSTEMS = ("system1", "system2", "system3", "system4")
# Keys whose models start from the pre-trained EAT (`init.eat`); without any, no pre-training is run.
PRETRAINED_KEYS = ("feat", "leat", "dual_branch", "fusion", "frozen_eat")
# (label, minuend, subtrahend): the differences the tables print, when both rows were run.
DIFFERENCES = (
    ("(a) FEAT - frozen EAT", "feat", "frozen_eat"),
    ("(a) LEAT - frozen EAT", "leat", "frozen_eat"),
    ("(b) frozen EAT - frozen random EAT", "frozen_eat", "frozen_eat_random"),
    ("(b) FEAT - FEAT (random init)", "feat", "feat_random"),
) + tuple((f"(c) {s} - log-mel", s, "log_mel") for s in SYSTEMS)


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Runs go to <workdir>/pretrain/s<k>/ and <workdir>/<set>/seed<k>/.")
  flags.DEFINE_list("sets", ["demo:work/synth_dcase:2"], "NAME:ROOT:CLIP_SECONDS of each DCASE-layout set.")
  flags.DEFINE_list("seeds", ["1", "2", "3"], "Seeds (pre-training, fine-tuning, random init).")
  flags.DEFINE_list("model_keys", list(AB_KEYS), "The pipeline's model keys to run.")
  flags.DEFINE_string("config", "configs/demo_pipeline.py", "Pipeline config.")
  flags.DEFINE_string("pretrain_root", "work/synth_dcase", "The pre-training corpus' DCASE 2025 set.")
  flags.DEFINE_string("pretrain_past", "work/synth_past", "The pre-training corpus' earlier years.")
  flags.DEFINE_bool("report_only", False, "Only read the runs already done and print the tables.")
  flags.DEFINE_string("nice", "10", "niceness of the child commands ('' for none).")
  flags.DEFINE_multi_string("pipeline_flag", [], "A further flag of every pipeline command, e.g. "
                            "--pipeline_flag=--config.models.feat.fine_tune.augment.mixup_prob=0.5 (repeatable): "
                            "one variant of a recipe, measured in its own --workdir.")
  flags.DEFINE_string("pretrain_workdir", "", "Take the pre-trained encoders from this learn_compare workdir's "
                      "pretrain/ (another variant's) instead of --workdir's; none is pre-trained here.")
  flags.mark_flag_as_required("workdir")


def parse_sets(entries) -> list[tuple[str, str, float]]:
  out = []
  for e in entries:
    parts = e.split(":")
    if len(parts) != 3:
      raise ValueError(f"--sets entry {e!r}: expected NAME:ROOT:CLIP_SECONDS")
    out.append((parts[0], parts[1], float(parts[2])))
  return out


def lock_holder(lock: str) -> int | None:
  """The live PID named in a pipeline workdir's lock file ("process <pid> on <host> ..."; empty when free)."""
  try:
    with open(lock) as f:
      words = f.read().split()
    pid = int(words[1]) if len(words) > 1 and words[0] == "process" else None
    if pid is not None:
      os.kill(pid, 0)
    return pid
  except (OSError, ValueError):
    return None


def run_command(cmd: list[str], log_path: str, lock: str = "") -> dict:
  """Runs `cmd` (output to `log_path`); returns its wall and CPU seconds (user + sys of the child) and load.
  A pipeline refused because another run holds its workdir is retried when that one has finished."""
  if FLAGS.nice:
    cmd = ["nice", "-n", FLAGS.nice] + cmd
  while True:
    while lock and lock_holder(lock):  # another run of this workdir (cheaper to wait here than to retry)
      time.sleep(15)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    with open(log_path, "w") as log:
      log.write(" ".join(cmd) + "\n")
      log.flush()
      rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    with open(log_path, errors="replace") as log:
      if not (rc and "is in use by process" in log.read()):
        break
    time.sleep(15)
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  info = {"cmd": " ".join(cmd), "rc": rc, "wall_s": time.perf_counter() - t0, "load_start": load0,
          "load_end": os.getloadavg()[0],
          "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}
  if rc:
    raise RuntimeError(f"command failed (rc {rc}), see {log_path}: {' '.join(cmd)}")
  return info


def pretrain_dir(seed: int) -> str:
  """One benchmarks.pretrain_probe workdir per seed (another variant's with --pretrain_workdir)."""
  return os.path.join(FLAGS.pretrain_workdir or FLAGS.workdir, "pretrain", f"s{seed}")


def pretrain(seed: int) -> tuple[str, dict | None]:
  """The demo's pre-training for `seed` (once for every set); returns (encoder dir, command info)."""
  out = pretrain_dir(seed)
  encoder = os.path.join(out, f"seed{seed}", "encoder")
  if FLAGS.report_only or os.path.isfile(os.path.join(out, "probe_mean.json")):
    return encoder, None
  if FLAGS.pretrain_workdir:
    raise FileNotFoundError(f"--pretrain_workdir: no finished pre-training of seed {seed} in {out}")
  os.makedirs(out, exist_ok=True)
  cmd = [sys.executable, "-m", "benchmarks.pretrain_probe", "--config=configs/pretrain_demo.py",
         f"--workdir={out}", f"--data_root={FLAGS.pretrain_root}", f"--seeds={seed}", "--probe=init",
         f"--config.data.sources.synth_2025.path={FLAGS.pretrain_root}",
         f"--config.data.sources.synth_past.path={FLAGS.pretrain_past}"]
  return encoder, run_command(cmd, os.path.join(out, "pretrain.log"))


def get_config(base: str = "configs/demo_pipeline.py"):
  """The pipeline config this benchmark runs: `base` with the pre-training stage off (`pretrain` = None, which
  the command line cannot set), so that `init.eat` names the encoder pre-trained once per seed.
  `--config=benchmarks/learn_compare.py:configs/demo_pipeline.py` on the pipeline's command line."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("learn_compare_base_config", base)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.pretrain = None
  return config


def pipeline_command(set_root: str, clip_seconds: float, seed: int, encoder: str, workdir: str) -> list[str]:
  config = get_config(FLAGS.config)
  cmd = [sys.executable, "-m", "asd_jax.pipeline", f"--config=benchmarks/learn_compare.py:{FLAGS.config}",
         f"--workdir={workdir}", f"--config.data.root={set_root}",
         f"--config.model_keys={','.join(FLAGS.model_keys)}", "--config.export=False", "--bars=False"]
  if encoder:
    cmd.append(f"--config.init.eat={os.path.abspath(encoder)}")
  for key in FLAGS.model_keys:
    entry = config.models[key]
    field = next((f for f in ("fine_tune", "train", "frozen") if entry.get(f) is not None), None)
    if field is None:  # a concatenation of other models (Fusion): nothing of its own
      continue
    cmd.append(f"--config.models.{key}.{field}.data.clip_seconds={clip_seconds:g}")
    cmd.append(f"--config.models.{key}.{field}.seed={seed}")
  return cmd + list(FLAGS.pipeline_flag)


def end_values(model_dir: str) -> dict | None:
  """Final logged loss, training and held-out accuracy of a model's `metrics.jsonl` (None if not trained)."""
  path = os.path.join(model_dir, "metrics.jsonl")
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  losses = [r for r in rows if "loss" in r]
  acc = [r for r in rows if "train_accuracy" in r]
  return {"step": losses[-1].get("step") if losses else None, "loss": losses[-1]["loss"] if losses else None,
          "train_accuracy": acc[-1]["train_accuracy"] if acc else None,
          "heldout_accuracy": acc[-1].get("heldout_accuracy") if acc else None}


def read_results(workdir: str) -> dict | None:
  """`DIR/results.json` merged with the copies this script keeps of earlier runs of other model keys in the same
  workdir (`results_<keys>.json`; the pipeline's results.json holds only its last run's models), newest last."""
  import glob
  paths = sorted(glob.glob(os.path.join(workdir, "results*.json")), key=os.path.getmtime)
  if not paths:
    return None
  res = {"models": {}, "systems": {}}
  for path in paths:
    with open(path) as f:
      r = json.load(f)
    res["models"].update(r["models"])
    res["systems"].update({n: s for n, s in r.get("systems", {}).items() if not s.get("reduced")})
  return res


def read_run(workdir: str) -> dict | None:
  res = read_results(workdir)
  if res is None:
    return None
  scores = {k: 100 * m["evaluation"]["official_score"] for k, m in res["models"].items() if m.get("evaluation")}
  names = {k: m["name"] for k, m in res["models"].items()}
  for name, s in res.get("systems", {}).items():
    if s.get("evaluation") and not s.get("reduced"):
      scores[name] = 100 * s["evaluation"]["official_score"]
      names[name] = name
  ends = {k: end_values(os.path.join(workdir, "models", k)) for k in res["models"]}
  return {"scores": scores, "names": names, "end": {k: v for k, v in ends.items() if v}}


def fmt_stats(vals: list[float]) -> tuple[str, str]:
  if not vals:
    return "-", "-"
  return f"{np.mean(vals):.2f}", f"{max(vals) - min(vals):.2f}"


def set_table(name: str, runs: dict[int, dict]) -> str:
  seeds = sorted(runs)
  head = "| row | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | spread |"
  sep = "|---|" + "---|" * (len(seeds) + 2)
  lines = [f"### {name}: official score (%)", "", head, sep]
  keys = list(dict.fromkeys(k for s in seeds for k in runs[s]["scores"]))
  names = {k: n for s in seeds for k, n in runs[s]["names"].items()}
  for k in keys:
    vals = [runs[s]["scores"].get(k) for s in seeds]
    mean, spread = fmt_stats([v for v in vals if v is not None])
    cells = " | ".join("-" if v is None else f"{v:.2f}" for v in vals)
    lines.append(f"| {names.get(k, k)} | {cells} | {mean} | {spread} |")
  for label, a, b in DIFFERENCES:
    vals = [runs[s]["scores"][a] - runs[s]["scores"][b] if a in runs[s]["scores"] and b in runs[s]["scores"]
            else None for s in seeds]
    if all(v is None for v in vals):
      continue
    mean, spread = fmt_stats([v for v in vals if v is not None])
    cells = " | ".join("-" if v is None else f"{v:+.2f}" for v in vals)
    lines.append(f"| **{label}** | {cells} | {mean} | {spread} |")
  lines += ["", f"{name}: end of training (final logged loss / training accuracy / held-out accuracy)", "",
            head.replace(" mean | spread |", "").rstrip(" |") + " |", "|---|" + "---|" * len(seeds)]
  trained = list(dict.fromkeys(k for s in seeds for k in runs[s]["end"]))
  for k in trained:
    cells = []
    for s in seeds:
      e = runs[s]["end"].get(k)
      cells.append("-" if e is None else " / ".join(
          "-" if e[f] is None else f"{e[f]:.3f}" for f in ("loss", "train_accuracy", "heldout_accuracy")))
    lines.append(f"| {names.get(k, k)} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def pretrain_table(seeds: list[int]) -> str:
  lines = ["### pre-training (configs/pretrain_demo.py, once per seed, on the pre-training corpus)", "",
           "| seed | teacher change | student change | loss_regression first -> last logged |", "|---|---|---|---|"]
  for seed in seeds:
    path = os.path.join(pretrain_dir(seed), "probe_mean.json")
    if not os.path.isfile(path):
      continue
    with open(path) as f:
      info = next(r["run"] for r in json.load(f)["results"] if "run" in r)
    reg = info.get("curves", {}).get("loss_regression", [float("nan")] * 2)
    lines.append(f"| {seed} | {100 * info['teacher_change']:.2f} % | {100 * info['student_change']:.2f} % "
                 f"| {reg[0]:.2f} -> {reg[1]:.2f} |")
  return "\n".join(lines)


def main(argv):
  del argv
  seeds = [int(s) for s in FLAGS.seeds]
  sets = parse_sets(FLAGS.sets)
  os.makedirs(FLAGS.workdir, exist_ok=True)
  commands_path = os.path.join(FLAGS.workdir, "commands.jsonl")  # appended: several invocations may share it

  def record(info: dict) -> None:
    with open(commands_path, "a") as f:
      f.write(json.dumps(info) + "\n")

  encoders = {}
  needs_encoder = any(k in PRETRAINED_KEYS for k in FLAGS.model_keys)
  for seed in seeds:
    if not needs_encoder:
      encoders[seed] = ""
      continue
    encoders[seed], info = pretrain(seed)
    if info:
      info.update(pretrain_seed=seed)
      record(info)
  out = [pretrain_table(seeds), ""]
  for name, root, clip_seconds in sets:
    runs = {}
    for seed in seeds:
      workdir = os.path.join(FLAGS.workdir, name, f"seed{seed}")
      if not FLAGS.report_only:
        os.makedirs(workdir, exist_ok=True)
        info = run_command(pipeline_command(root, clip_seconds, seed, encoders[seed], workdir),
                           os.path.join(workdir, f"learn_compare_{'_'.join(FLAGS.model_keys)}.log"),
                           lock=os.path.join(workdir, ".lock"))
        info.update(set=name, seed=seed, model_keys=FLAGS.model_keys)
        shutil.copyfile(os.path.join(workdir, "results.json"),
                        os.path.join(workdir, f"results_{'_'.join(FLAGS.model_keys)}.json"))
        record(info)
        print(f"{name} seed {seed}: {info['wall_s']:.0f} s wall, {info['cpu_s']:.0f} CPU s, load "
              f"{info['load_start']:.1f} -> {info['load_end']:.1f}", flush=True)
      run = read_run(workdir)
      if run is not None:
        runs[seed] = run
    if runs:
      out += [set_table(f"{name} ({root}, {clip_seconds:g} s read)", runs), ""]
  print("\n".join(out))


if __name__ == "__main__":
  sys.path.insert(0, os.getcwd())
  define_flags()
  app.run(main)
