"""The documented flow end to end: fit two models, score, fuse, threshold, evaluate, submit."""

import numpy as np
import pytest

from asd_jax.data.records import ClipRecord
from asd_jax.evaluation import files, official
from asd_jax.scoring import fusion, scorer as scorer_lib, threshold
from configs import systems


def _clips(split, n_per_domain, rng, anomalous=False):
  recs, emb = [], []
  for machine, section, center in (("fan", "00", 0.0), ("valve", "00", 3.0)):
    for domain, shift in (("source", 0.0), ("target", 1.5)):
      for label in (("normal", "anomaly") if anomalous else ("normal",)):
        for i in range(n_per_domain[domain]):
          recs.append(ClipRecord(f"/{split}/{machine}/section_{section}_{domain}_{split}_{label}_{i:04d}.wav",
                                 machine, section, split, domain, label))
          base = np.zeros((2, 8))
          base[:, 0] = 1.0 + center
          base[:, 1] = shift
          if label == "anomaly":
            base[:, 2] = 1.5  # a direction no normal clip has
          emb.append(base + 0.3 * rng.normal(size=(2, 8)))
  return np.asarray(emb), recs


def test_fit_score_fuse_threshold_evaluate_submit(tmp_path):
  rng = np.random.default_rng(0)
  train_emb, train_recs = _clips("train", {"source": 30, "target": 3}, rng)
  test_emb, test_recs = _clips("test", {"source": 10, "target": 10}, rng, anomalous=True)
  # Two "models": the embeddings seen through two different layer selections.
  scorers = {"first": scorer_lib.fit(train_emb, train_recs, {"layers": [0]}),
             "second": scorer_lib.fit(train_emb, train_recs, {"layers": [1], "k": 2})}
  weights = {"first": 0.5, "second": 0.5}
  models = fusion.score_models(scorers, {"first": test_emb, "second": test_emb}, test_recs)
  system = fusion.score_system(weights, scorers, models, test_recs, fusion.fit_thresholds(weights, scorers))
  fused, decisions = system.scores, system.decisions
  test_scores = [models[k].scores.normalized for k in weights]
  result = official.evaluate_records(test_recs, fused, decisions)
  assert result.official_score > 0.9  # anomalies lie off the normal manifold
  assert 0 < decisions.sum() < len(decisions)
  files.write_submission(str(tmp_path / "sub"), test_recs, fused, decisions)
  files.write_ground_truth(str(tmp_path / "gt"), test_recs)
  assert official.evaluate_dirs(str(tmp_path / "sub"), str(tmp_path / "gt")).official_score == result.official_score
  best, value, _ = fusion.grid_search(test_scores, official.official_score_objective(test_recs), step=0.5)
  assert value >= result.official_score - 1e-12
  assert len(systems.get_config("system4").weights) == 6


def test_system_configs_hold_the_report_weights():
  expected = {
      "system1": [0.1, 0.0, 0.5, 0.0, 0.0, 0.4],
      "system2": [0.0, 0.3, 0.1, 0.3, 0.2, 0.1],
      "system3": [0.1, 0.2, 0.1, 0.2, 0.2, 0.2],
      "system4": [0.1, 0.2, 0.1, 0.2, 0.3, 0.1],
  }
  for name, weights in expected.items():
    config = systems.get_config(name)
    assert config.models == ["FBEATs", "LBEATs", "FEAT", "LEAT", "Dual-Branch", "Fusion"]
    np.testing.assert_allclose(config.weights, weights)
    assert sum(config.weights) == pytest.approx(1.0)
  with pytest.raises(ValueError, match="unknown system 'system5'"):
    systems.get_config("system5")


def test_decide_by_section_errors():
  recs = [ClipRecord("/t/a.wav", "fan", "00", "test"), ClipRecord("/t/b.wav", "pump", "00", "test")]
  np.testing.assert_array_equal(
      threshold.decide_by_section(recs, np.array([0.5, 0.5]), {("fan", "00"): 0.4, ("pump", "00"): 0.6}), [1, 0])
  with pytest.raises(ValueError, match="/t/b.wav: no threshold for machine 'pump' section '00'"):
    threshold.decide_by_section(recs, np.zeros(2), {("fan", "00"): 0.0})
  with pytest.raises(ValueError, match=r"2 records but scores of shape \(3,\)"):
    threshold.decide_by_section(recs, np.zeros(3), {})
