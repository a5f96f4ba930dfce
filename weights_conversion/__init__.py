"""Command-line converters from the released PyTorch checkpoints to Orbax Flax parameters."""
