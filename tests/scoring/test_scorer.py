"""Per-section scorer: bank contents, scores against scikit-learn, statistics, save/load, errors."""

import subprocess
import sys

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from asd_jax.data.records import ClipRecord
from asd_jax.scoring import scorer as scorer_lib, threshold

SECTIONS = [("fan", "00"), ("ToyCar", "01")]


def _train(n_source=24, n_target=4, layers=2, dim=6, seed=0):
  rng = np.random.default_rng(seed)
  records, rows = [], []
  for machine, section in SECTIONS:
    for i in range(n_source + n_target):
      domain = "source" if i < n_source else "target"
      records.append(ClipRecord(f"/train/{machine}/section_{section}_{domain}_train_normal_{i:04d}.wav",
                                machine, section, "train", domain, "normal"))
      rows.append(rng.normal(size=(layers, dim)) + (2.0 if domain == "target" else 0.0))
  return np.asarray(rows), records


def _test(n=10, layers=2, dim=6, seed=1):
  rng = np.random.default_rng(seed)
  records = [ClipRecord(f"/test/{m}/clip_{i}.wav", m, s, "test") for m, s in SECTIONS for i in range(n)]
  return rng.normal(size=(len(records), layers, dim)), records


def _flat(x):
  unit = x / np.linalg.norm(x, axis=-1, keepdims=True)
  return unit.reshape(len(x), -1)


def _section_rows(records, key):
  return np.array([i for i, r in enumerate(records) if (r.machine, r.section) == key])


def test_bank_holds_source_target_and_smote_to_source_count():
  emb, recs = _train()
  scorer = scorer_lib.fit(emb, recs)
  for key in SECTIONS:
    state = scorer.sections[key]
    assert state.bank.shape == (24 + 4 + 20, 12)
    assert state.bank_synthetic.sum() == 20 and (state.bank_domain == 1).sum() == 24
    np.testing.assert_allclose(np.linalg.norm(state.bank, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(state.train_clip, _section_rows(recs, key))
  assert scorer_lib.fit(emb, recs, {"smote": False}).sections[SECTIONS[0]].bank.shape == (28, 12)


@pytest.mark.parametrize("k", [1, 3])
def test_scores_and_statistics_match_sklearn(k):
  emb, recs = _train()
  test_emb, test_recs = _test()
  scorer = scorer_lib.fit(emb, recs, {"smote": False, "k": k, "threshold_method": "quantile"})
  out = scorer_lib.score(scorer, test_emb, test_recs)
  train_x, test_x = _flat(emb), _flat(test_emb)
  for key in SECTIONS:
    tr, te = _section_rows(recs, key), _section_rows(test_recs, key)
    nn = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(train_x[tr])
    dist, idx = nn.kneighbors(test_x[te], n_neighbors=k)
    np.testing.assert_allclose(out.raw[te], dist.mean(1), atol=1e-5)
    np.testing.assert_array_equal(out.nearest_train_clip[te], tr[idx[:, 0]])
    # Leave-one-out: each training clip's neighbours among the other training clips.
    loo_dist, _ = nn.kneighbors(train_x[tr], n_neighbors=k + 1)
    loo = loo_dist[:, 1:].mean(1)
    state = scorer.sections[key]
    assert state.mean == pytest.approx(loo.mean(), abs=1e-5)
    assert state.std == pytest.approx(loo.std(), abs=1e-5)
    np.testing.assert_allclose(out.normalized[te], (dist.mean(1) - loo.mean()) / loo.std(), atol=1e-3)
    norm_loo = (loo - loo.mean()) / loo.std()
    assert state.threshold == pytest.approx(np.quantile(norm_loo, 0.9), abs=1e-3)
    np.testing.assert_array_equal(out.decisions[te], (out.normalized[te] > state.threshold).astype(int))


def test_bank_modes_match_sklearn():
  emb, recs = _train()
  test_emb, test_recs = _test()
  train_x, test_x = _flat(emb), _flat(test_emb)
  key = SECTIONS[0]
  tr, te = _section_rows(recs, key), _section_rows(test_recs, key)
  is_t = np.array([recs[i].domain == "target" for i in tr])
  d_src = NearestNeighbors(n_neighbors=1, metric="cosine").fit(train_x[tr[~is_t]]).kneighbors(test_x[te])[0][:, 0]
  d_tgt = NearestNeighbors(n_neighbors=1, metric="cosine").fit(train_x[tr[is_t]]).kneighbors(test_x[te])[0][:, 0]
  raw = lambda bank: scorer_lib.score(scorer_lib.fit(emb, recs, {"smote": False, "bank": bank}), test_emb,  # noqa: E731
                                      test_recs).raw[te]
  np.testing.assert_allclose(raw("target_only"), d_tgt, atol=1e-5)
  np.testing.assert_allclose(raw("domain_min"), np.minimum(d_src, d_tgt), atol=1e-5)
  np.testing.assert_allclose(raw("joint"), np.minimum(d_src, d_tgt), atol=1e-5)  # k=1: same thing


def test_smote_lowers_target_scores_and_nearest_clip_is_a_real_clip():
  emb, recs = _train()
  with_smote = scorer_lib.fit(emb, recs)
  without = scorer_lib.fit(emb, recs, {"smote": False})
  rng = np.random.default_rng(5)
  test_emb = rng.normal(size=(8, 2, 6)) + 2.0  # near the target clips
  test_recs = [ClipRecord(f"/t/{i}.wav", "fan", "00", "test") for i in range(8)]
  a, b = scorer_lib.score(with_smote, test_emb, test_recs), scorer_lib.score(without, test_emb, test_recs)
  assert np.all(a.raw <= b.raw + 1e-6) and np.any(a.raw < b.raw - 1e-4)
  fan_rows = set(_section_rows(recs, ("fan", "00")).tolist())
  assert set(a.nearest_train_clip.tolist()) <= fan_rows


def test_save_load_round_trip(tmp_path):
  emb, recs = _train()
  test_emb, test_recs = _test()
  scorer = scorer_lib.fit(emb, recs, {"k": 2, "layers": [1], "bank": "domain_min"})
  path = str(tmp_path / "scorer.npz")
  scorer.save(path)
  loaded = scorer_lib.Scorer.load(path)  # allow_pickle=False inside
  assert loaded.config == scorer.config and loaded.train_paths == scorer.train_paths
  a, b = scorer_lib.score(scorer, test_emb, test_recs), scorer_lib.score(loaded, test_emb, test_recs)
  for name in ("raw", "normalized", "nearest_train_clip", "decisions"):
    np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
  np.savez(tmp_path / "other.npz", x=np.zeros(2))
  with pytest.raises(ValueError, match="not a saved Scorer"):
    scorer_lib.Scorer.load(str(tmp_path / "other.npz"))


def test_errors_name_the_problem():
  emb, recs = _train()
  scorer = scorer_lib.fit(emb, recs)
  with pytest.raises(ValueError, match="no fitted state for machine 'pump' section '00'"):
    scorer_lib.score(scorer, emb[:1], [ClipRecord("/t/x.wav", "pump", "00", "test")])
  with pytest.raises(ValueError, match="fit: 3 embeddings for 56 records"):
    scorer_lib.fit(emb[:3], recs)
  bad = list(recs)
  bad[0] = ClipRecord("/train/bad.wav", "fan", "00", "train", "source", "anomaly")
  with pytest.raises(ValueError, match="/train/bad.wav: only normal machine clips"):
    scorer_lib.fit(emb, bad)
  bad[0] = ClipRecord("/train/nodomain.wav", "fan", "00", "train", None, "normal")
  with pytest.raises(ValueError, match="/train/nodomain.wav: training clip needs domain"):
    scorer_lib.fit(emb, bad)
  with pytest.raises(ValueError, match=r"unknown scorer config fields \['kk'\]"):
    scorer_lib.fit(emb, recs, {"kk": 1})
  with pytest.raises(ValueError, match="config.bank='both'"):
    scorer_lib.fit(emb, recs, {"bank": "both"})
  only_source = [r for r in recs if r.domain == "source"]
  with pytest.raises(ValueError, match="needs source and target"):
    scorer_lib.fit(emb[: len(only_source)], only_source, {"bank": "target_only"})
  with pytest.raises(ValueError, match="embedding dim 6 != fitted dim 12"):
    scorer_lib.score(scorer, emb[:2, :1], recs[:2])
  nan = emb.copy()
  nan[3] = np.nan
  with pytest.raises(ValueError, match=f"non-finite embeddings for 1 clips: {recs[3].path}"):
    scorer_lib.fit(nan, recs)


def test_scoring_and_evaluation_never_import_jax():
  code = ("import sys, asd_jax.scoring.scorer, asd_jax.scoring.fusion, asd_jax.evaluate, "
          "asd_jax.evaluation.official; "
          "assert not any(m == 'jax' or m.startswith('jax.') for m in sys.modules), 'jax imported'")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[2]))
