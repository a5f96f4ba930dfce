"""benchmarks/anomaly_kinds: the per-kind AUC against scikit-learn, and the kinds of a written synthetic set."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from asd_jax.data import layout
from asd_jax.data import records as records_lib
from asd_jax.data import synth
from benchmarks import anomaly_kinds


def test_auc_by_kind_is_the_mean_over_machines_of_sklearns_auc():
  rng = np.random.default_rng(0)
  n = 120
  machines = np.array(["fan", "valve"] * (n // 2))
  kinds = rng.choice(["normal", "impulses", "rubbing"], n)
  scores = rng.normal(size=n) + (kinds == "impulses")
  expected = np.mean([roc_auc_score((kinds[(machines == m) & (kinds != "rubbing")] == "impulses").astype(int),
                                    scores[(machines == m) & (kinds != "rubbing")]) for m in ("fan", "valve")])
  got = anomaly_kinds.auc_by_kind(scores, machines, kinds, kinds == "impulses")
  assert got == pytest.approx(expected, abs=1e-12)
  # A machine type with fewer than MIN_PER_KIND anomalies of the kind is left out; none left gives NaN.
  few = kinds.copy()
  few[(machines == "valve") & (kinds == "impulses")] = "normal"
  few[np.flatnonzero((machines == "valve"))[:2]] = "impulses"
  only_fan = roc_auc_score((few[(machines == "fan") & (few != "rubbing")] == "impulses").astype(int),
                           scores[(machines == "fan") & (few != "rubbing")])
  assert anomaly_kinds.auc_by_kind(scores, machines, few, few == "impulses") == pytest.approx(only_fan, abs=1e-12)
  assert np.isnan(anomaly_kinds.auc_by_kind(scores, machines, few, few == "modulation"))


def test_kinds_of_a_written_set_are_its_machines_anomalies_and_follow_the_seed(tmp_path):
  synth.generate(tmp_path / "set", seed=3, machines=("fan", "bearing"), duration=0.25, test_clips=8)
  test = [r for r in layout.scan_dataset(str(tmp_path / "set"), audio=False) if records_lib.is_test_clip(r)]
  kinds, strengths = anomaly_kinds.anomaly_kinds(test, 3, (0.1, 1.0))
  for r, kind, s in zip(test, kinds, strengths):
    if r.label == records_lib.ANOMALY:
      assert kind in synth.MACHINES[r.machine].anomalies and 0.1 <= s <= 1.0
    else:
      assert kind == "normal" and s == 0.0
  assert len(set(kinds[kinds != "normal"])) > 1
  other, _ = anomaly_kinds.anomaly_kinds(test, 4, (0.1, 1.0))
  assert (other != kinds).any()  # another seed's draws: the seed must be the set's own


def test_a_clip_without_a_synthetic_anomaly_name_is_named():
  clip = records_lib.ClipRecord(path="/d/fan/test/clip_anomaly.wav", machine="fan", section="00", domain="source",
                                split="test", label=records_lib.ANOMALY, attributes=())
  with pytest.raises(ValueError, match="clip_anomaly.wav: not a synthetic anomaly's name"):
    anomaly_kinds.anomaly_kinds([clip], 0, (0.1, 1.0))
