"""What a frozen encoder's embeddings know: kNN and linear-probe accuracy of clip labels on held-out clips.

Pre-training is judged here apart from anomaly detection: a self-supervised encoder that learned something
about machine sounds should tell machine types and operating conditions (attributes) apart better than the
same architecture at its random initialisation. The probe fits on one set of clips (the dataset's `train/`
clips) and is scored on others (the `test/` normal clips), so nothing it is scored on was used to fit it; the
pre-training corpus leaves test clips out as well (`asd_jax.data.corpus`).

Tasks (labels parsed from the clips' names, `ClipRecord`):
  machine    the machine type, every clip;
  attribute  `<machine>/<attribute string>` (e.g. `fan/m-n_W`), only clips whose names show attributes
             (the 2025 dev layout hides bearing, ToyTrain and slider's); the target domain's combination is
             one of the classes, so this task also asks for the domain.
Probes (each a number in [0, 1], the fraction of held-out clips whose label is predicted):
  knn        cosine 1-nearest-neighbour among the fitting clips (the similarity the anomaly scores use);
  linear     multinomial logistic regression (scikit-learn, L2, `C`) on features standardised with the
             fitting clips' mean and std. `C = 1` is scikit-learn's default, left untuned (project choice:
             choosing it on the held-out clips would fit the probe to them).
NumPy and scikit-learn only: no JAX (the embeddings come from `asd_jax.embedding.store`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from asd_jax.data import filenames
from asd_jax.data import records as records_lib
from asd_jax.scoring import knn

TASKS = ("machine", "attribute")
PROBES = ("knn", "linear")


def task_labels(records: Sequence[records_lib.ClipRecord], task: str) -> np.ndarray:
  """`[clips]` object array of each clip's label for `task`, None where the clip has none (no attributes)."""
  if task == "machine":
    return np.array([r.machine for r in records], object)
  if task == "attribute":
    return np.array([f"{r.machine}/{filenames.attribute_string(r.attributes)}" if r.attributes else None
                     for r in records], object)
  raise ValueError(f"unknown probe task {task!r}; expected one of {TASKS}")


def knn_accuracy(fit_x: np.ndarray, fit_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
  """Fraction of `test_x [n, D]` whose cosine-nearest row of `fit_x [m, D]` has the same label (1-NN).

  Computed in float64 (`scoring.knn.cosine_knn`); ties in similarity go to the lower fitting row."""
  nearest = knn.cosine_knn(test_x, fit_x, k=1, dtype=np.float64).indices[:, 0]
  return float(np.mean(np.asarray(fit_y)[nearest] == np.asarray(test_y)))


def linear_accuracy(fit_x: np.ndarray, fit_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                    C: float = 1.0) -> float:
  """Accuracy on `test_x [n, D]` of a multinomial logistic regression fitted on `fit_x [m, D]` (float64).

  Features are standardised with the fitting rows' mean and std (a constant feature is left centred);
  the solver is deterministic (lbfgs), so the result depends on the inputs only."""
  from sklearn.linear_model import LogisticRegression  # imported on use: scoring paths never pay for it

  fit_x, test_x = np.asarray(fit_x, np.float64), np.asarray(test_x, np.float64)
  mean, std = fit_x.mean(0), fit_x.std(0)
  std = np.where(std > 0, std, 1.0)
  model = LogisticRegression(C=C, max_iter=5000)
  model.fit((fit_x - mean) / std, np.asarray(fit_y, str))
  return float(np.mean(model.predict((test_x - mean) / std) == np.asarray(test_y, str)))


def probe(fit_x: np.ndarray, fit_records: Sequence[records_lib.ClipRecord], test_x: np.ndarray,
          test_records: Sequence[records_lib.ClipRecord], *, C: float = 1.0) -> dict[str, dict[str, float]]:
  """`{task: {probe: accuracy, "clips": held-out clips, "classes": classes, "chance": majority share}}`.

  `fit_x [m, D]` and `test_x [n, D]` are pooled embeddings in the records' order. A task is left out when
  either side has no labelled clip; held-out clips whose class never occurs among the fitting clips count
  as wrong (neither probe can name it), and are reported under "unseen".
  """
  if len(fit_x) != len(fit_records) or len(test_x) != len(test_records):
    raise ValueError(f"embeddings and records differ in length: fit {len(fit_x)} vs {len(fit_records)}, "
                     f"test {len(test_x)} vs {len(test_records)}")
  out: dict[str, dict[str, float]] = {}
  for task in TASKS:
    fy, ty = task_labels(fit_records, task), task_labels(test_records, task)
    fk, tk = fy != None, ty != None  # noqa: E711  (elementwise on object arrays)
    if not fk.any() or not tk.any() or len(set(fy[fk])) < 2:
      continue
    fy, ty = fy[fk].astype(str), ty[tk].astype(str)
    values, counts = np.unique(ty, return_counts=True)
    out[task] = {
        "knn": knn_accuracy(fit_x[fk], fy, test_x[tk], ty),
        "linear": linear_accuracy(fit_x[fk], fy, test_x[tk], ty, C=C),
        "clips": int(tk.sum()), "classes": int(len(set(fy))),
        "chance": float(counts.max() / counts.sum()),
        "unseen": int(np.sum(~np.isin(ty, fy))),
    }
  return out


def held_out_split(records: Sequence[records_lib.ClipRecord]) -> tuple[np.ndarray, np.ndarray]:
  """`(fit rows, test rows)` of a dataset's records: `train/` machine clips fit, normal `test/` clips score."""
  fit = np.array([r.split == records_lib.SPLIT_TRAIN and r.kind == records_lib.KIND_MACHINE for r in records])
  test = np.array([records_lib.is_test_clip(r) and r.label == records_lib.NORMAL for r in records])
  return np.flatnonzero(fit), np.flatnonzero(test)


def probe_embeddings(arrays: Mapping[str, np.ndarray], records: Sequence[records_lib.ClipRecord], *,
                     C: float = 1.0) -> dict[str, dict[str, dict[str, float]]]:
  """Probes an `embeddings.npz`'s arrays (`asd_jax.embedding.store`) over `held_out_split(records)`.

  Returns `{feature: probe(...)}`: "layer<i>" for each layer i of `layer_embeddings [clips, L, D]` (0 = first
  block; the last is the pooled final layer, `embedding`), or only "final" (`embedding`) without them.
  """
  fit, test = held_out_split(records)
  if not len(fit) or not len(test):
    raise ValueError(f"probe: need train/ machine clips and normal test/ clips, found {len(fit)} and {len(test)}")
  recs = list(records)
  if "layer_embeddings" in arrays:
    layers = np.asarray(arrays["layer_embeddings"])
    features = {f"layer{i}": layers[:, i] for i in range(layers.shape[1])}
  else:
    features = {"final": np.asarray(arrays["embedding"])}
  return {name: probe(x[fit], [recs[i] for i in fit], x[test], [recs[i] for i in test], C=C)
          for name, x in features.items()}
