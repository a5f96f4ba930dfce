"""A pipeline workdir's provenance: its config, the package versions it ran with, when it ran and how long.

The pipeline writes it to `DIR/provenance.json` (`pipeline.workdir.PROVENANCE`) when an invocation starts and
again at each of its progress lines and at its end (atomically; `write`), and the report shows it
(`asd_jax.report`). Plain JSON:

  {"format": "asd_jax.provenance", "version": 2,
   "config": {...},                    the pipeline config (`to_json_best_effort`)
   "versions": {"python": "3.11.2", "jax": "0.10.2", ...},   None for a package that is not installed
   "platform": "Linux-...-x86_64", "devices": "cpu x 2" (or "" when JAX was not imported),
   "started": "2026-01-01T12:00:00+00:00", "finished": ...,  UTC, ISO 8601; of this invocation
   "wall_s": 243.1,                    this invocation (null "finished": it is running, or was interrupted)
   "stage_s": {"train+embed": 200.0, "score": 3.2, ...},     seconds per stage of this invocation
   "invocations": [{"started", "finished", "wall_s", "stage_s"}, ...],  every invocation on the workdir,
                                       this one last; an interrupted one ("finished": null) up to its last line
   "total_wall_s": 1561.0,             the sum of the invocations' wall_s
   "weights": {"fbeats": {"beats": {"source": "checkpoint", "path": ..., "sha256": "sha256:..."}},
               "feat": {"eat": {"source": "random", "seed": 0, "why": "init.random_weights=eat"}}, ...,
               "pretraining": {...}}   what every encoder of every model started from (`pipeline.specs`)

So a run killed after 26 minutes of training and finished by a 47 s rerun records both (issue 23.8: version 1
held only the last invocation's 47 s). A version-1 file counts as one finished invocation. Nothing here imports
JAX.
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging

from asd_jax import atomic

FORMAT = "asd_jax.provenance"
VERSION = 2
INVOCATION_FIELDS = ("started", "finished", "wall_s", "stage_s")  # one entry of "invocations"
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


@functools.cache
def _versions() -> dict[str, str | None]:
  return package_versions()  # once per process: a run writes its provenance at every progress line


def earlier_invocations(path: str) -> list[dict[str, Any]]:
  """The invocations the provenance file `path` records (`[]` without one), to carry into the next `write`. A
  file that cannot be read is logged as a warning naming it, and its invocations are left out."""
  try:
    info = read(path)
  except (OSError, ValueError) as e:
    logging.warning("%s: its earlier invocations' wall time is lost (%s)", path, e)
    return []
  if info is None:
    return []
  if "invocations" in info:
    return [dict(entry) for entry in info["invocations"]]
  return [{field: info.get(field) for field in INVOCATION_FIELDS}]  # version 1: its one invocation


def write(path: str, *, config: Mapping[str, Any], started: str, wall_s: float, stage_s: Mapping[str, float],
          earlier: Sequence[Mapping[str, Any]] = (), finished: bool = True,
          weights: Mapping[str, Any] | None = None) -> str:
  """Writes the provenance file `path` (see the module docstring) of an invocation that started at `started` and
  has run `wall_s` seconds (`finished`: it has ended), after the invocations `earlier`, whose encoders started from
  `weights`; returns `path`."""
  now = {"started": started, "finished": utc_now() if finished else None, "wall_s": float(wall_s),
         "stage_s": {k: float(v) for k, v in stage_s.items()}}
  invocations = [*(dict(entry) for entry in earlier), now]
  atomic.write_json(path, {
      "format": FORMAT, "version": VERSION, "config": dict(config), "versions": _versions(),
      "platform": platform.platform(), "devices": _devices(), **now, "invocations": invocations,
      "total_wall_s": float(sum(entry.get("wall_s") or 0.0 for entry in invocations)),
      "weights": dict(weights or {}),
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
