"""Anomaly scoring in NumPy: SMOTE, cosine kNN, normalisation, fusion, thresholds. Never imports JAX.

Modules: `features` (concatenate per-layer embeddings), `smote` (target-domain oversampling),
`knn` (chunked exact cosine kNN), `threshold` (gamma / quantile decision thresholds), `detector`
(fit and apply one model's scorer per machine type and section, saved as one .npz), `fusion`
(weighted sum of normalised scores and a simplex grid search of the weights).

A system of several models, as a pipeline runs it:

  from asd_jax import evaluate
  from asd_jax.scoring import detector, fusion
  from configs import systems

  # Per model: fit on normal training embeddings [clips, layers, dim] + ClipRecords, then score.
  scorers = [detector.fit(train_emb[m], train_records, {"k": 1}) for m in models]
  test_scores = [detector.score(s, test_emb[m], test_records).normalized for m, s in zip(models, scorers)]

  # Fuse with a fixed weight set, or search weights on the development set.
  weights = systems.get_config("system2").weights
  # weights, best, _ = fusion.grid_search(dev_scores, evaluate.official_score_objective(dev_records))
  fused = fusion.fuse(test_scores, weights)

  # Decisions from thresholds fitted on the fused normal training scores, then evaluate / submit.
  thresholds = detector.fused_thresholds(scorers, weights)
  decisions = detector.apply_thresholds(test_records, fused, thresholds)
  print(evaluate.format_table(evaluate.evaluate_records(test_records, fused, decisions)))
  evaluate.write_submission("submission/", test_records, fused, decisions)

`detector.Scorer.save(path)` / `detector.Scorer.load(path)` store a fitted scorer (bank,
statistics, threshold, training clip paths, settings) as NumPy arrays plus a JSON header.
Normalisation statistics and thresholds come from the normal training clips only (leave-one-out
kNN distances), never from test labels.
"""
