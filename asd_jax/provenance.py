"""A pipeline invocation's provenance: its config, the package versions it ran with, when it ran and how long.

The pipeline writes it to `DIR/provenance.json` (`pipeline.workdir.PROVENANCE`) at the end of each invocation
(atomically; `write`) and the report shows it (`asd_jax.report`). Plain JSON:

  {"format": "asd_jax.provenance", "version": 1,
   "config": {...},                    the pipeline config (`to_json_best_effort`)
   "versions": {"python": "3.11.2", "jax": "0.10.2", ...},   None for a package that is not installed
   "platform": "Linux-...-x86_64", "devices": "cpu x 2" (or "" when JAX was not imported),
   "started": "2026-01-01T12:00:00+00:00", "finished": ...,  UTC, ISO 8601
   "wall_s": 243.1,                    the whole invocation
   "stage_s": {"train+embed": 200.0, "score": 3.2, ...},    seconds per stage of this invocation
   "weights": {"fbeats": {"beats": {"source": "checkpoint", "path": ..., "sha256": "sha256:..."}},
               "feat": {"eat": {"source": "random", "seed": 0, "why": "init.random_weights=eat"}}, ...,
               "pretraining": {...}}   what every encoder of every model started from (`pipeline.specs`)

An invocation that reuses trained models records its own (short) times; the models' training times are in
their training runs' `metrics.jsonl`. Nothing here imports JAX.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from asd_jax import atomic

FORMAT = "asd_jax.provenance"
VERSION = 1
PACKAGES = ("asd_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy", "scipy",
            "scikit-learn", "imbalanced-learn", "librosa", "ml-collections", "matplotlib")


def package_versions(packages: Sequence[str] = PACKAGES) -> dict[str, str | None]:
  """{"python": version, package: installed version or None} for `packages`."""
  out: dict[str, str | None] = {"python": platform.python_version()}
  for name in packages:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def _devices() -> str:
  """"<platform> x <count>" of JAX's devices when JAX is already imported, else ""."""
  jax = sys.modules.get("jax")
  if jax is None:
    return ""
  devices = jax.devices()
  return f"{devices[0].platform} x {len(devices)}"


def utc_now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write(path: str, *, config: Mapping[str, Any], started: str, wall_s: float,
          stage_s: Mapping[str, float], weights: Mapping[str, Any] | None = None) -> str:
  """Writes the provenance file `path` (see the module docstring); returns `path`."""
  atomic.write_json(path, {
      "format": FORMAT, "version": VERSION, "config": dict(config), "versions": package_versions(),
      "platform": platform.platform(), "devices": _devices(), "started": started, "finished": utc_now(),
      "wall_s": float(wall_s), "stage_s": {k: float(v) for k, v in stage_s.items()}, "weights": dict(weights or {}),
  })
  return path


def read(path: str) -> dict[str, Any] | None:
  """The provenance file `path`, None when there is none; ValueError naming the file when it is not one."""
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    try:
      info = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from e
  found = info.get("format") if isinstance(info, dict) else type(info).__name__
  if found != FORMAT:
    raise ValueError(f"{path}: expected format {FORMAT!r}, found {found!r}")
  return info
