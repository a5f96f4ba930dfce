"""Official DCASE Task 2 evaluation under every year's protocol (2020-2026): which rules apply (`protocol`), the
metrics (`metrics`), submission and ground-truth files (`files`), and the evaluation of records, folders and
datasets (`official`). The command line is `python -m asd_jax.evaluate`. NumPy / scikit-learn only."""
