"""Fusion weights of the four submitted systems of the DCASE 2025 BEATs/EAT report.

Each system is a fixed linear fusion of six models' normalised anomaly scores, in the order of
`MODELS`. Select one with `--config=configs/systems.py:system2`; `get_config()` alone gives
System1. `config.models` and `config.weights` line up index by index.
"""

import ml_collections

MODELS = ("FBEATs", "LBEATs", "FEAT", "LEAT", "Dual-Branch", "Fusion")

WEIGHTS = {
    "system1": (0.1, 0.0, 0.5, 0.0, 0.0, 0.4),
    "system2": (0.0, 0.3, 0.1, 0.3, 0.2, 0.1),
    "system3": (0.1, 0.2, 0.1, 0.2, 0.2, 0.2),
    "system4": (0.1, 0.2, 0.1, 0.2, 0.3, 0.1),
}


def get_config(system: str = "system1") -> ml_collections.ConfigDict:
  """Fusion config of one system: name, model names, weights, threshold settings."""
  key = (system or "system1").lower()
  if key not in WEIGHTS:
    raise ValueError(f"unknown system {system!r}; expected one of {sorted(WEIGHTS)}")
  return ml_collections.ConfigDict(dict(
      name=key,
      models=list(MODELS),
      weights=list(WEIGHTS[key]),
      threshold_method="gamma",  # fitted on the fused normal training scores per section
      threshold_quantile=0.9,
  ))
