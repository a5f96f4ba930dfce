"""What a pipeline run produced, and its tables: Table 1 (per model), Table 3 (per system), `results.json`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from asd_jax.data import records as records_lib
from asd_jax.evaluation.metrics import Evaluation
from asd_jax.pipeline import specs as specs_lib
from asd_jax.scoring import fusion
from asd_jax.scoring import scorer as scorer_lib

GRID_SYSTEM = "grid"


@dataclasses.dataclass
class ModelResult:
  """One model's fitted scorer and its scores of the test clips (normalised [n], decisions [n], ...)."""

  spec: specs_lib.ModelSpec
  scorer: scorer_lib.Scorer
  scores: fusion.ModelScores
  evaluation: Evaluation | None


@dataclasses.dataclass
class SystemResult:
  spec: specs_lib.SystemSpec
  fused: fusion.FusedScores | None
  evaluation: Evaluation | None
  submission_dir: str = ""


@dataclasses.dataclass
class PipelineResult:
  """Everything a run produced; `actions[key]` says per stage whether it "ran" or was "cached"."""

  workdir: str
  test_records: list[records_lib.ClipRecord]
  train_records: list[records_lib.ClipRecord]
  models: dict[str, ModelResult]
  systems: dict[str, SystemResult]
  actions: dict[str, dict[str, str]]
  tables: str
  detector_dir: str = ""
  stage_s: dict[str, float] = dataclasses.field(default_factory=dict)  # wall seconds per stage, in run order
  warnings: list[str] = dataclasses.field(default_factory=list)  # training-health warnings, in order (`stages`)


def format_stage_times(stage_s: dict[str, float]) -> str:
  """`stage   seconds` lines and the total, for the end of a run's output."""
  lines = ["Stage times (wall clock)", ""]
  lines += [f"  {name:<12} {seconds:8.1f} s" for name, seconds in stage_s.items()]
  total = sum(stage_s.values())
  lines.append(f"  {'total':<12} {total:8.1f} s ({total / 60:.1f} min)")
  return "\n".join(lines)


def _pct(v: float | None) -> str:
  """A fraction as a percentage; "n/a" for a value that could not be computed (a machine type or section without
  both normal and anomalous clips of a domain, as in a small sample of real clips)."""
  return "n/a" if v is None else f"{100.0 * v:.2f}"


def format_table1(models: Sequence[ModelResult]) -> str:
  """Per model: harmonic mean of each machine type's AUC (source), AUC (target), pAUC; the official score.
  The systems' models come first, reference rows (models no system fuses) after them."""
  evaluated = [m for m in models if m.evaluation is not None]
  if not evaluated:
    return "(no labelled test clips: Table 1 needs the development set)"
  evaluated = [m for m in evaluated if not m.spec.reference] + [m for m in evaluated if m.spec.reference]
  machines = [s.machine for s in evaluated[0].evaluation.machines]
  lines = ["| model | " + " | ".join(machines) + " | official score |", "|---" * (len(machines) + 2) + "|"]
  for m in evaluated:
    by_machine = {s.machine: s.hmean for s in m.evaluation.machines}
    lines.append(f"| {m.spec.name} | " + " | ".join(_pct(by_machine[k]) for k in machines)
                 + f" | {_pct(m.evaluation.official_score)} |")
  return "\n".join(lines)


def format_table3(results: Sequence[SystemResult], model_names: dict[str, str]) -> str:
  """Per system: harmonic means over all sections of AUC (source), AUC (target), pAUC, and the official score."""
  lines = ["| system | AUC (source) | AUC (target) | pAUC | official score | weights |", "|---|---|---|---|---|---|"]
  for r in results:
    weights = ", ".join(f"{model_names[k]} {w:.2f}" for k, w in r.spec.weights.items() if w)
    name = r.spec.name + (" (reduced)" if r.spec.reduced else "")
    if r.evaluation is None:
      lines.append(f"| {name} | | | | | {weights or r.spec.note} |")
      continue
    e = r.evaluation
    lines.append(f"| {name} | {_pct(e.hmean_auc_source)} | {_pct(e.hmean_auc_target)} | {_pct(e.hmean_pauc)} "
                 f"| {_pct(e.official_score)} | {weights} |")
  return "\n".join(lines)


def format_tables(models: dict[str, ModelResult], results: dict[str, SystemResult]) -> str:
  """The channel policy the models read clips with, Table 1, Table 3 and (apart) the grid-searched system, as
  markdown with captions."""
  names = {k: m.spec.name for k, m in models.items()}
  fixed = [r for n, r in results.items() if n != GRID_SYSTEM]
  references = [m.spec.name for m in models.values() if m.spec.reference]
  note = (f"\n\nReference rows, not fused into any system: {', '.join(references)}." if references else "")
  policies = sorted({m.spec.channels for m in models.values() if m.spec.channels})  # one (pipeline.specs)
  channels = f"Every model read the clips with channel policy (data.channels): {', '.join(policies)}.\n\n"
  tables = (channels + "Table 1: harmonic mean of AUC (source), AUC (target) and pAUC per machine type (%)\n\n"
            + format_table1(list(models.values())) + note
            + "\n\nTable 3: fused systems, harmonic means over all sections (%)\n\n" + format_table3(fixed, names))
  if GRID_SYSTEM in results:
    tables += ("\n\nGrid-searched weights (chosen on the same labelled test clips: an upper bound, not a "
               "system)\n\n" + format_table3([results[GRID_SYSTEM]], names))
  return tables


def _evaluation_json(e: Evaluation | None) -> dict[str, Any] | None:
  return None if e is None else e.to_json_dict()


def summary(result: PipelineResult, *, dataset: str, labelled: bool) -> dict[str, Any]:
  """The JSON of `results.json` (see the `asd_jax.pipeline` docstring)."""
  return {
      "dataset": dataset, "labelled": labelled, "actions": result.actions,
      "models": {k: {"name": m.spec.name, "kind": m.spec.kind, "reference": m.spec.reference,
                     "layers": m.spec.layers, "sources": list(m.spec.sources), "channels": m.spec.channels,
                     "evaluation": _evaluation_json(m.evaluation)} for k, m in result.models.items()},
      "systems": {n: {"weights": r.spec.weights, "reduced": r.spec.reduced, "note": r.spec.note,
                      "submission": r.submission_dir, "evaluation": _evaluation_json(r.evaluation)}
                  for n, r in result.systems.items()},
      "detector": result.detector_dir,
      "warnings": list(result.warnings),
  }
