"""Checkpoints, all of them: `converted` (encoder weights: released `.pt` files read safely and strictly, and the
converted folder format `load()` reads) and `train_state` (a training run's Orbax checkpoints: state, data
position and metadata, checksums, and which settings make two runs the same)."""
