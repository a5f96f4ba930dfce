"""The detector: a trained system as a self-contained folder, and new recordings scored with it.

`detector` (the folder's layout; `Detector` loads one and scores recordings as the pipeline scored its clips),
`export` (a system of a pipeline run -> a detector folder, atomically), `detect` (what `python -m
asd_jax.detect` runs: inputs checked, machine type and section told, scores printed and written)."""
