"""Anomaly scoring in NumPy: SMOTE, cosine kNN, normalisation, fusion, thresholds. Never imports JAX.

Modules: `features` (concatenate per-layer embeddings; `model_vectors`: what a model's scorer sees), `smote`
(target-domain oversampling), `knn` (chunked exact cosine kNN), `threshold` (gamma / quantile thresholds and
the one decision rule, `decide_by_section`), `scorer` (fit and apply one model's scorer per machine type and
section, saved as one .npz), `fusion` (the one path from per-model vectors to a system's fused scores,
decisions and nearest normal clips, shared by the pipeline and the detector; the weight search).

A system of several models, as the pipeline runs it:

  from asd_jax.evaluation import files, metrics, official
  from asd_jax.scoring import fusion, scorer

  # Per model: fit on normal training embeddings [clips, layers, dim] + ClipRecords.
  scorers = {m: scorer.fit(train_emb[m], train_records, {"k": 1}) for m in models}
  per_model = fusion.score_models(scorers, {m: test_emb[m] for m in models}, test_records)

  # Fuse with a fixed weight set (or search weights on the development set with fusion.grid_search and
  # official.official_score_objective(dev_records)); thresholds come from the fused normal training scores.
  weights = {"fbeats": 0.1, "feat": 0.5, "fusion": 0.4}
  system = fusion.score_system(weights, scorers, per_model, test_records, fusion.fit_thresholds(weights, scorers))
  print(metrics.format_table(official.evaluate_records(test_records, system.scores, system.decisions)))
  files.write_submission("submission/", test_records, system.scores, system.decisions)

`scorer.Scorer.save(path)` / `scorer.Scorer.load(path)` store a fitted scorer (bank, statistics, threshold,
training clip paths, settings) as NumPy arrays plus a JSON header. Normalisation statistics and thresholds
come from the normal training clips only (leave-one-out kNN distances), never from test labels. Scores are
computed in float64 from float32 embeddings and the normalisation's std is floored (`scorer.STD_FLOOR`), so a
clip's score does not depend on the other clips scored with it.
"""
