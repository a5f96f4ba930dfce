"""Embedding extraction: `extract` (the one path from wav files to a network's outputs, shared by the pipeline
and the detector), `store` (the embeddings file), `workdir` (every clip of a dataset with a workdir's model)."""
