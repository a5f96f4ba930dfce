"""Official DCASE 2023-2025 Task 2 evaluation: metrics (`metrics`), submission and ground-truth
files (`files`). The command line is `python -m asd_jax.evaluate`. NumPy / scikit-learn only."""
