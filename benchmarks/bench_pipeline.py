"""Benchmark of the pipeline's NumPy half at the real development-set size: scoring, fusion, grid search.

Everything after embedding extraction runs on the host: per model one SMOTE + cosine 1-NN scorer per
section, four fixed-weight systems, the grid search over fusion weights (3003 weight vectors for six
models at step 0.1) and the submission files. Random embeddings of the real DCASE 2025 dev sizes (7 machine
types x 990 source + 10 target training clips and 200 test clips, 768-dim, or 12 layers x 768 for
multi-layer scoring) stand in for the encoders' outputs; the cost does not depend on their values.
"""

from __future__ import annotations

import tempfile

import numpy as np

from asd_jax.data import records as records_lib
from asd_jax.evaluation import files, official
from asd_jax.scoring import fusion, scorer as scorer_lib
from benchmarks import common

MACHINES = ("ToyCar", "ToyTrain", "bearing", "fan", "gearbox", "slider", "valve")


def _records(n_source: int, n_target: int, n_test: int):
  train, test = [], []
  for m in MACHINES:
    for i in range(n_source + n_target):
      domain = "source" if i < n_source else "target"
      train.append(records_lib.ClipRecord(f"/d/{m}/train/section_00_{domain}_train_normal_{i:04d}.wav", m, "00",
                                          "train", domain, "normal"))
    for i in range(n_test):
      domain, label = ("source", "target")[i % 2], ("normal", "anomaly")[(i // 2) % 2]
      test.append(records_lib.ClipRecord(f"/d/{m}/test/section_00_{domain}_test_{label}_{i:04d}.wav", m, "00",
                                         "test", domain, label))
  return train, test


def run(quick: bool = False) -> str:
  n_source, n_target, n_test, dim, layers, step = (99, 3, 40, 64, 2, 0.25) if quick else (990, 10, 200, 768, 12, 0.1)
  train, test = _records(n_source, n_target, n_test)
  rng = np.random.default_rng(0)
  rows = []

  def score_model(x):
    scorer = scorer_lib.fit(x[:len(train)], train)
    return scorer, scorer_lib.score(scorer, x[len(train):], test)

  last = rng.normal(size=(len(train) + len(test), dim)).astype(np.float32)
  t, s = common.time_call(lambda: score_model(last), repeats=1 if not quick else 2, warmup=0)
  rows.append([f"score one model, final layer ({dim}-dim)", t, s])
  multi = rng.normal(size=(len(train) + len(test), layers, dim)).astype(np.float32)
  t, s = common.time_call(lambda: score_model(multi), repeats=1 if not quick else 2, warmup=0)
  rows.append([f"score one model, {layers} layers concatenated", t, s])
  del multi

  keys = ["m0", "m1", "m2", "m3", "m4", "m5"]
  scorers, vectors = {}, {}
  for k in keys:
    x = rng.normal(size=last.shape).astype(np.float32)
    scorers[k], vectors[k] = scorer_lib.fit(x[:len(train)], train), x[len(train):]
  models = fusion.score_models(scorers, vectors, test)
  normalized = {k: models[k].scores.normalized for k in keys}
  weights = dict(zip(keys, (0.1, 0.2, 0.1, 0.2, 0.3, 0.1)))

  def fuse():
    return fusion.score_system(weights, scorers, models, test, fusion.fit_thresholds(weights, scorers))

  t, s = common.time_call(fuse, repeats=3)
  rows.append(["fuse one system (scores, thresholds, decisions, nearest clips)", t, s])
  objective = official.official_score_objective(test)
  grid = fusion.simplex_grid(len(keys), step)
  t, s = common.time_call(lambda: fusion.grid_search([normalized[k] for k in keys], objective, weights=grid),
                          repeats=1, warmup=0)
  rows.append([f"grid search, {len(grid)} weight vectors (step {step})", t, s])
  fused = fuse()
  with tempfile.TemporaryDirectory() as out:
    t, s = common.time_call(lambda: files.write_submission(out, test, fused.scores, fused.decisions), repeats=3)
  rows.append(["write one submission folder", t, s])
  size = f"{len(MACHINES)} machine types x ({n_source} + {n_target}) training and {n_test} test clips"
  return "\n".join([
      "## Pipeline: scoring, fusion and grid search (host side)", "",
      common.machine_description(), "",
      f"Random embeddings at {size}; seconds (median, spread = max - min).", "",
      common.markdown_table(["step", "median s", "spread s"], rows),
  ])


if __name__ == "__main__":
  print(run())
