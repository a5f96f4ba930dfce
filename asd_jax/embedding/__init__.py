"""Embedding extraction: `extract` (the one path from wav files to a network's outputs, shared by the pipeline
and the detector), `store` (the embeddings file), `embed` (every clip of a dataset with a training workdir's
model: the library behind `python -m asd_jax.embed`)."""
