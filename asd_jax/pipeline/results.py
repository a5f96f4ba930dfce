"""What a pipeline run produced, and its tables: Table 1 (per model), Table 3 (per system), `results.json`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from asd_jax.data import records as records_lib
from asd_jax.evaluation import metrics
from asd_jax.evaluation.metrics import Evaluation
from asd_jax.evaluation.protocol import Protocol
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
  protocol: Protocol = Protocol.DCASE2022  # the year's rules the test clips were evaluated by
  warnings: list[str] = dataclasses.field(default_factory=list)  # each printed once, when found (`stages`)


def format_stage_times(stage_s: dict[str, float]) -> str:
  """`stage   seconds` lines and the total, for the end of a run's output."""
  lines = ["Stage times (wall clock)", ""]
  lines += [f"  {name:<12} {seconds:8.1f} s" for name, seconds in stage_s.items()]
  total = sum(stage_s.values())
  lines.append(f"  {'total':<12} {total:8.1f} s ({total / 60:.1f} min)")
  return "\n".join(lines)


_fmt = metrics.formatter(True)  # percent, two decimals; a blank value (None) is "-"


def _machine_cell(m: metrics.MachineSummary, protocol: Protocol) -> str:
  if protocol is Protocol.DCASE2020:
    return f"{_fmt(m.auc)} / {_fmt(m.pauc)}"
  return _fmt(m.hmean)


def _overall_cell(e: Evaluation) -> str:
  if e.protocol is Protocol.DCASE2020:
    return f"{_fmt(e.auc)} / {_fmt(e.pauc)}"
  return _fmt(e.official_score)


def table1_caption(protocol: Protocol) -> str:
  """What Table 1's cells are under the year's rules."""
  if protocol is Protocol.DCASE2020:
    return ("Table 1: AUC / pAUC per machine type, means over its machine IDs (%); last column: their means over "
            "the machine types (DCASE 2020 has no official score)")
  if protocol is Protocol.DCASE2021:
    return ("Table 1: harmonic mean of the AUCs and pAUCs of every section and domain, per machine type (%); last "
            "column: the official score (DCASE 2021)")
  return "Table 1: harmonic mean of AUC (source), AUC (target) and pAUC per machine type (%)"


def format_table1(models: Sequence[ModelResult]) -> str:
  """Per model: each machine type's figure (2022+: the harmonic mean of its AUC (source), AUC (target) and pAUC;
  2021: of its AUCs and pAUCs; 2020: its mean AUC / pAUC over machine IDs) and the overall one (the official score;
  2020: the means over machine types); "-" where a machine type has no evaluated section. The systems' models come
  first, reference rows (models no system fuses) after them; under the table, which sections the figures cover."""
  evaluated = [m for m in models if m.evaluation is not None]
  if not evaluated:
    return "(no section can be evaluated, see the warnings: Table 1 needs test clips labelled normal and anomalous)"
  evaluated = [m for m in evaluated if not m.spec.reference] + [m for m in evaluated if m.spec.reference]
  first = evaluated[0].evaluation
  protocol = first.protocol
  machines = [s.machine for s in first.machines]
  last = "AUC / pAUC (mean)" if protocol is Protocol.DCASE2020 else "official score"
  lines = ["| model | " + " | ".join(machines) + f" | {last} |", "|---" * (len(machines) + 2) + "|"]
  for m in evaluated:
    by_machine = {s.machine: s for s in m.evaluation.machines}
    lines.append(f"| {m.spec.name} | " + " | ".join(_machine_cell(by_machine[k], protocol) for k in machines)
                 + f" | {_overall_cell(m.evaluation)} |")
  return "\n".join(lines) + "\n\n" + metrics.coverage_line(first)


# Table 3's columns per protocol: (header, `Evaluation` field), over all evaluated sections.
TABLE3_COLUMNS = {
    Protocol.DCASE2020: (("AUC (mean)", "auc"), ("pAUC (mean)", "pauc"), ("(AUC + pAUC) / 2", "arithmetic_mean")),
    Protocol.DCASE2021: (("AUC (h-mean)", "hmean_auc"), ("pAUC (h-mean)", "hmean_pauc"),
                         ("official score", "official_score")),
    Protocol.DCASE2022: (("AUC (source)", "hmean_auc_source"), ("AUC (target)", "hmean_auc_target"),
                         ("pAUC", "hmean_pauc"), ("official score", "official_score")),
}


def format_table3(results: Sequence[SystemResult], model_names: dict[str, str],
                  protocol: Protocol = Protocol.DCASE2022) -> str:
  """Per system: the year's summary columns over all evaluated sections (2022+: harmonic means of AUC (source),
  AUC (target), pAUC and the official score; 2021: of the AUCs and pAUCs, the official score; 2020: the means over
  machine types of AUC, pAUC and their mean), "-" where not evaluated, and its weights."""
  columns = TABLE3_COLUMNS[protocol]
  lines = ["| system | " + " | ".join(h for h, _ in columns) + " | weights |", "|---" * (len(columns) + 2) + "|"]
  for r in results:
    weights = ", ".join(f"{model_names[k]} {w:.2f}" for k, w in r.spec.weights.items() if w)
    name = r.spec.name + (" (reduced)" if r.spec.reduced else "")
    values = [None if r.evaluation is None else getattr(r.evaluation, field) for _, field in columns]
    lines.append(f"| {name} | " + " | ".join(_fmt(v) for v in values) + f" | {weights or r.spec.note} |")
  return "\n".join(lines)


def format_tables(models: dict[str, ModelResult], results: dict[str, SystemResult],
                  protocol: Protocol = Protocol.DCASE2022) -> str:
  """The channel policy the models read clips with, Table 1, Table 3 and (apart) the grid-searched system, as
  markdown with captions, in the columns of the year's `protocol`."""
  names = {k: m.spec.name for k, m in models.items()}
  fixed = [r for n, r in results.items() if n != GRID_SYSTEM]
  references = [m.spec.name for m in models.values() if m.spec.reference]
  note = (f"\n\nReference rows, not fused into any system: {', '.join(references)}." if references else "")
  policies = sorted({m.spec.channels for m in models.values() if m.spec.channels})  # one (pipeline.specs)
  channels = f"Every model read the clips with channel policy (data.channels): {', '.join(policies)}.\n\n"
  what = "means" if protocol is Protocol.DCASE2020 else "harmonic means"
  tables = (channels + table1_caption(protocol) + "\n\n" + format_table1(list(models.values())) + note
            + f"\n\nTable 3: fused systems, {what} over all evaluated sections (%)\n\n"
            + format_table3(fixed, names, protocol))
  if GRID_SYSTEM in results:
    tables += ("\n\nGrid-searched weights (chosen on the same labelled test clips: an upper bound, not a "
               "system)\n\n" + format_table3([results[GRID_SYSTEM]], names, protocol))
  return tables


def _evaluation_json(e: Evaluation | None) -> dict[str, Any] | None:
  return None if e is None else e.to_json_dict()


def summary(result: PipelineResult, *, dataset: str, labelled: bool) -> dict[str, Any]:
  """The JSON of `results.json` (see `asd_jax.pipeline.workdir`); `labelled`: whether some section could be
  evaluated."""
  return {
      "dataset": dataset, "labelled": labelled, "protocol": result.protocol.value, "warnings": list(result.warnings),
      "actions": result.actions,
      "models": {k: {"name": m.spec.name, "kind": m.spec.kind, "reference": m.spec.reference,
                     "layers": m.spec.layers, "sources": list(m.spec.sources), "channels": m.spec.channels,
                     "evaluation": _evaluation_json(m.evaluation)} for k, m in result.models.items()},
      "systems": {n: {"weights": r.spec.weights, "reduced": r.spec.reduced, "note": r.spec.note,
                      "submission": r.submission_dir, "evaluation": _evaluation_json(r.evaluation)}
                  for n, r in result.systems.items()},
      "detector": result.detector_dir,
  }
