"""Anomaly scoring in NumPy: SMOTE, cosine kNN, normalisation, fusion, thresholds. Never imports JAX."""
