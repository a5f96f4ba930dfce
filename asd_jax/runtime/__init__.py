"""The device runtime shared by training and inference: mesh sharding, prefetching, per-device slices, autotuning."""
