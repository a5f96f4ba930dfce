"""The frozen-encoder probe: 1-NN and linear-probe accuracy against independent computations, labels, split."""

import numpy as np
import pytest

from asd_jax.data import records as rec
from asd_jax.pretraining import probe


def _brute_force_1nn(fit_x, fit_y, test_x, test_y):  # a plain double loop over cosine similarities
  hits = 0
  for q, want in zip(test_x, test_y):
    best, best_j = -np.inf, -1
    for j, b in enumerate(fit_x):
      sim = float(np.dot(q, b) / (np.linalg.norm(q) * np.linalg.norm(b)))
      if sim > best:
        best, best_j = sim, j
    hits += fit_y[best_j] == want
  return hits / len(test_y)


def test_knn_accuracy_matches_a_brute_force_search():
  rng = np.random.default_rng(0)
  fit_x, test_x = rng.normal(size=(60, 8)), rng.normal(size=(40, 8))
  fit_y, test_y = rng.integers(0, 3, 60).astype(str), rng.integers(0, 3, 40).astype(str)
  got = probe.knn_accuracy(fit_x, fit_y, test_x, test_y)
  assert got == _brute_force_1nn(fit_x, fit_y, test_x, test_y)
  assert 0.0 < got < 1.0  # random labels: neither all right nor all wrong, so the comparison means something


def test_knn_is_cosine_not_euclidean():
  fit_x = np.array([[1.0, 0.0], [0.0, 10.0]])  # "b" is far in L2 but points the same way as the query
  assert probe.knn_accuracy(fit_x, np.array(["a", "b"]), np.array([[0.1, 1.0]]), np.array(["b"])) == 1.0


def _clusters(rng, n_per_class, centres, spread):
  x = np.concatenate([c + spread * rng.normal(size=(n_per_class, len(c))) for c in centres])
  y = np.repeat(np.arange(len(centres)).astype(str), n_per_class)
  return x, y


def test_linear_probe_separates_what_is_separable_and_not_what_is_not():
  rng = np.random.default_rng(1)
  centres = 5.0 * np.eye(4, 16)
  fit_x, fit_y = _clusters(rng, 30, centres, 0.5)
  test_x, test_y = _clusters(rng, 30, centres, 0.5)
  assert probe.linear_accuracy(fit_x, fit_y, test_x, test_y) == 1.0
  # Labels independent of the features: accuracy ~ Binomial(120, 1/4) / 120; P(> 0.45) < 1e-5.
  shuffled = rng.permutation(test_y)
  assert probe.linear_accuracy(fit_x, fit_y, test_x, shuffled) < 0.45


def test_linear_probe_is_scale_invariant_per_feature():
  rng = np.random.default_rng(2)
  centres = np.eye(3, 6)
  fit_x, fit_y = _clusters(rng, 20, centres, 0.6)
  test_x, test_y = _clusters(rng, 20, centres, 0.6)
  scale = np.array([1e-3, 1.0, 1e3, 1.0, 5.0, 0.1])  # standardisation undoes any per-feature scale
  assert probe.linear_accuracy(fit_x, fit_y, test_x, test_y) == probe.linear_accuracy(
      fit_x * scale, fit_y, test_x * scale, test_y)


def _record(machine, split, domain, label, attrs, i):
  return rec.ClipRecord(path=f"/d/{machine}/{split}/{i}.wav", machine=machine, section="00", split=split,
                        domain=domain, label=label, attributes=attrs)


def test_labels_and_held_out_split():
  fan_w, fan_z = (("m-n", "W"),), (("m-n", "Z"),)
  records = [
      _record("fan", "train", "source", "normal", fan_w, 0),
      _record("fan", "train", "target", "normal", fan_z, 1),
      _record("bearing", "train", "source", "normal", (), 2),
      _record("fan", "test", "source", "normal", fan_w, 3),
      _record("fan", "test", "source", "anomaly", fan_w, 4),
      _record("bearing", "test", "target", "normal", (), 5),
      rec.ClipRecord(path="/d/fan/supplemental/6.wav", machine="fan", section="00", split="supplemental",
                     domain="source", kind=rec.KIND_NOISE),
  ]
  assert list(probe.task_labels(records, "machine")) == ["fan", "fan", "bearing", "fan", "fan", "bearing", "fan"]
  assert list(probe.task_labels(records, "attribute")[:3]) == ["fan/m-n_W", "fan/m-n_Z", None]
  fit, test = probe.held_out_split(records)
  assert list(fit) == [0, 1, 2] and list(test) == [3, 5]  # no anomaly, no supplementary clip
  with pytest.raises(ValueError, match="unknown probe task"):
    probe.task_labels(records, "colour")


def test_probe_embeddings_per_layer_and_task():
  rng = np.random.default_rng(3)
  attrs = [(("m-n", "W"),), (("m-n", "X"),)]
  records, layers = [], []
  for i in range(40):
    machine = ("fan", "valve")[i % 2]
    split = "train" if i < 24 else "test"
    a = attrs[(i // 2) % 2] if machine == "fan" else ()
    records.append(_record(machine, split, "source", "normal", a, i))
    good = np.zeros(4)
    good[i % 2] = 3.0  # layer 1 knows the machine type; layer 0 is noise
    good[2 + (i // 2) % 2] = 3.0 if machine == "fan" else 0.0  # and the fan's attribute
    layers.append(np.stack([rng.normal(size=4), good + 0.1 * rng.normal(size=4)]))
  layers = np.array(layers)
  out = probe.probe_embeddings({"embedding": layers[:, -1], "layer_embeddings": layers}, records)
  assert set(out) == {"layer0", "layer1"}
  assert out["layer1"]["machine"]["knn"] == 1.0 and out["layer1"]["machine"]["linear"] == 1.0
  assert out["layer1"]["attribute"]["knn"] == 1.0
  assert out["layer1"]["attribute"]["clips"] == 8 and out["layer1"]["attribute"]["classes"] == 2
  assert out["layer1"]["machine"]["chance"] == 0.5 and out["layer1"]["machine"]["unseen"] == 0
  only_final = probe.probe_embeddings({"embedding": layers[:, -1]}, records)
  assert set(only_final) == {"final"} and only_final["final"] == out["layer1"]


def test_unseen_held_out_classes_count_as_wrong():
  fit_x, test_x = np.eye(2), np.array([[1.0, 0.0], [0.0, 1.0]])
  fit_r = [_record("fan", "train", "source", "normal", (("m-n", v),), i) for i, v in enumerate("WX")]
  test_r = [_record("fan", "test", "source", "normal", (("m-n", v),), 2 + i) for i, v in enumerate("WZ")]
  out = probe.probe(np.vstack([fit_x, fit_x]), fit_r + fit_r, test_x, test_r)["attribute"]
  assert out["knn"] == 0.5 and out["linear"] == 0.5 and out["unseen"] == 1
  assert "machine" not in probe.probe(fit_x, fit_r, test_x, test_r)  # one machine type: nothing to tell apart
