r"""Which anomalies a model detects: AUC per anomaly kind and per layer, on a pipeline workdir of a synthetic set.

  python -m benchmarks.anomaly_kinds --workdir=work/demo --data_root=work/synth_dcase --synth_seed=0 \
      [--strength=0.1,1] [--models=feat,frozen_eat]

For a set written by `python -m asd_jax.data.synth` (its `--seed` and `--strength` given again here), each test
anomaly's kind and strength are drawn again (`synth.anomaly_of`), and every embedded model of the workdir is
scored in several views: "pipeline" (the model's saved test scores, as Table 1 scored them), "final" (the pooled
last layer), "layer i" (one layer alone) and "all" (multi-layer fusion), each refitted with the model's own
scorer settings (SMOTE + cosine k-NN, from its saved scorer). Per view it prints the official score (%) and, per
kind, the AUC (%) of the test normal clips against that kind's anomalies, per machine type and then averaged
over the machine types that have at least 3 such anomalies; "strong" and "weak" split every kind's anomalies at
the middle of the strength range. Issue 22 used it to find what fine-tuning on the synthetic attribute classes
costs (BENCHMARKS.md, "What training adds on the synthetic sets").
"""

from __future__ import annotations

import os
import pathlib
import re
import sys
from collections.abc import Sequence

import numpy as np
from absl import app, flags

from asd_jax.data import layout
from asd_jax.data import records as records_lib
from asd_jax.data import synth
from asd_jax.evaluation import metrics, official
from asd_jax.pipeline import workdir as workdir_lib
from asd_jax.scoring import features
from asd_jax.scoring import scorer as scorer_lib

MIN_PER_KIND = 3  # a machine type's AUC for a kind needs at least this many of its anomalies
_NUMBER = re.compile(r"_anomaly_(\d{4})_")


def anomaly_kinds(records: Sequence[records_lib.ClipRecord], seed: int,
                  strength: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
  """`(kind [n] str, strength [n])` of test clips `records` of a synth set: "normal" and 0 for normal clips."""
  kinds, strengths = [], []
  for r in records:
    if r.label != records_lib.ANOMALY:
      kinds.append("normal")
      strengths.append(0.0)
      continue
    match = _NUMBER.search(pathlib.Path(r.path).name)
    if match is None:
      raise ValueError(f"{r.path}: not a synthetic anomaly's name (section_00_<domain>_test_anomaly_<nnnn>_...)")
    kind, s = synth.anomaly_of(seed, r.machine, r.domain, int(match.group(1)), strength)
    kinds.append(kind)
    strengths.append(s)
  return np.array(kinds), np.array(strengths)


def auc_by_kind(scores: np.ndarray, machines: np.ndarray, kinds: np.ndarray, selected: np.ndarray | None = None
                ) -> float:
  """Mean over machine types of the AUC of normal clips (kind "normal") vs the anomalies in `selected` (default
  every anomaly); NaN if no machine type has `MIN_PER_KIND` of them."""
  selected = kinds != "normal" if selected is None else selected & (kinds != "normal")
  aucs = []
  for machine in np.unique(machines):
    keep = (machines == machine) & ((kinds == "normal") | selected)
    anomalous = keep & (kinds != "normal")
    if anomalous.sum() >= MIN_PER_KIND and (keep & (kinds == "normal")).any():
      aucs.append(metrics.fast_auc(anomalous[keep].astype(int), scores[keep]))
  return float(np.mean(aucs)) if aucs else float("nan")


def kind_row(scores: np.ndarray, test: Sequence[records_lib.ClipRecord], kinds: np.ndarray, strengths: np.ndarray,
             strength: tuple[float, float]) -> dict[str, float]:
  """Official score and AUC per kind, strong and weak half, all in %."""
  machines = np.array([r.machine for r in test])
  row = {"official": 100 * official.evaluate_records(test, scores).official_score}
  for kind in synth.ANOMALY_KINDS:
    row[kind] = 100 * auc_by_kind(scores, machines, kinds, kinds == kind)
  strong = strengths > sum(strength) / 2
  row["strong"] = 100 * auc_by_kind(scores, machines, kinds, strong)
  row["weak"] = 100 * auc_by_kind(scores, machines, kinds, ~strong)
  return row


def model_views(workdir: str, key: str, records: Sequence[records_lib.ClipRecord]) -> dict[str, np.ndarray]:
  """{view: [clips, dim] or [clips, layers, dim]} of one embedded model: final, each layer, all layers."""
  arrays = workdir_lib.read_embeddings(workdir, key, records)
  views = {"final": arrays["embedding"]}
  for name in sorted(k for k in arrays if k == "layer_embeddings" or k.startswith("layers_")):
    prefix = "" if name == "layer_embeddings" else name[len("layers_"):] + " "
    for i in range(arrays[name].shape[1]):
      views[f"{prefix}layer {i}"] = arrays[name][:, i]
  if any(k == "layer_embeddings" or k.startswith("layers_") for k in arrays):
    views["all"] = features.model_vectors(key, {key: arrays}, layers="all")
  return views


def measure(workdir: str, data_root: str, seed: int, strength: tuple[float, float],
            models: Sequence[str] = ()) -> dict[str, dict[str, dict[str, float]]]:
  """{model key: {view: row}} for every embedded model of `workdir` (or `models`)."""
  records = layout.scan_dataset(data_root, audio=False)
  bank_idx = [i for i, r in enumerate(records) if records_lib.is_bank_clip(r)]
  test_idx = [i for i, r in enumerate(records) if records_lib.is_test_clip(r)]
  bank, test = [records[i] for i in bank_idx], [records[i] for i in test_idx]
  kinds, strengths = anomaly_kinds(test, seed, strength)
  test_paths = [r.path for r in test]
  out = {}
  keys = models or sorted(k for k in os.listdir(os.path.join(workdir, workdir_lib.MODELS))
                          if workdir_lib.has_embeddings(workdir, k))
  for key in keys:
    rows = {}
    saved, paths = workdir_lib.read_test_scores(workdir, key)
    order = {p: i for i, p in enumerate(paths)}
    if set(order) != set(test_paths):
      raise ValueError(f"{workdir}: model {key}'s saved test scores are not of {data_root}'s test clips")
    rows["pipeline"] = kind_row(saved[[order[p] for p in test_paths]], test, kinds, strengths, strength)
    settings = workdir_lib.read_scorer(workdir, key).config
    for view, x in model_views(workdir, key, records).items():
      fitted = scorer_lib.fit(np.asarray(x)[bank_idx], bank, settings)
      scores = scorer_lib.score(fitted, np.asarray(x)[test_idx], test).normalized
      rows[view] = kind_row(scores, test, kinds, strengths, strength)
    out[key] = rows
  return out


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
  columns = ("official",) + synth.ANOMALY_KINDS + ("strong", "weak")
  lines = ["| model | view | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
  for key, rows in results.items():
    for view, row in rows.items():
      lines.append(f"| {key} | {view} | " + " | ".join(f"{row[c]:.1f}" for c in columns) + " |")
  return "\n".join(lines)


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "A pipeline workdir whose models were embedded and scored.")
  flags.DEFINE_string("data_root", None, "The synthetic set the workdir ran on.")
  flags.DEFINE_integer("synth_seed", 0, "The set's `synth --seed`.")
  flags.DEFINE_list("strength", ["0.1", "1"], "The set's `synth --strength` LO,HI.")
  flags.DEFINE_list("models", [], "Model keys (default: every embedded model).")
  flags.mark_flags_as_required(["workdir", "data_root"])


def main(argv):
  del argv
  lo, hi = (float(v) for v in flags.FLAGS.strength)
  results = measure(flags.FLAGS.workdir, flags.FLAGS.data_root, flags.FLAGS.synth_seed, (lo, hi),
                    flags.FLAGS.models)
  print(f"AUC (%) of the test normal clips vs each anomaly kind, mean over machine types; {flags.FLAGS.workdir}")
  print(table(results))


if __name__ == "__main__":
  sys.path.insert(0, os.getcwd())
  define_flags()
  app.run(main)
