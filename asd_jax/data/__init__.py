"""DCASE Task 2 data: file-name parsing, dataset layouts, label space, Grain pipeline, synthetic data."""
