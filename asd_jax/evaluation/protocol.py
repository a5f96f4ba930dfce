"""Which DCASE Task 2 year's evaluation rules apply: one `Protocol` per rule set the official code has used.

- `DCASE2020` (2020): per machine ID (`id_00`), AUC and pAUC over its test clips (no domains); per machine type
  the mean over its IDs; no single official score.
- `DCASE2021` (2021): per section and domain (`source_test/`, `target_test/`), AUC and pAUC (and P/R/F1) over that
  domain's clips only; official score: the harmonic mean of every AUC and pAUC.
- `DCASE2022` (2022-2026): per section, AUC (source) and AUC (target) over that domain's normal clips and all the
  section's anomalous clips, pAUC over all clips; official score: the harmonic mean of all three of every section.

`asd_jax.evaluation.metrics` computes them (its docstring names the official file and function each follows). The protocol of a
dataset is known from its names and layout (`detect`): 2020 names carry machine IDs (`normal_id_00_00000000.wav`,
`id_00_00000000.wav`); a 2021 set keeps its test clips in `source_test/` and `target_test/`; every later year
(2022-2026) shares one protocol. `resolve(year, paths)` gives the protocol of an explicit year (the user's
override, `evaluate --year=2021`) or else detects it. A ground-truth folder has no layout, so a 2021 one is known by
its official per-domain file names (`ground_truth_<machine>_section_<ss>_<domain>_test.csv`), or by `--year`.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Iterable

# 2020 names (see asd_jax.data.filenames: _DEV_2020, _EVAL_2020): the two-digit part after `id_` is the machine ID.
_NAME_2020 = re.compile(r"^(?:normal_|anomaly_)?id_\d{2}_\d+\.wav$", re.IGNORECASE)
TEST_DIRS_2021 = ("source_test", "target_test")  # where the 2021 dev and eval sets keep their test clips
FIRST_YEAR, LAST_YEAR = 2020, 2026


class Protocol(str, enum.Enum):
  """One DCASE Task 2 evaluation rule set; the value names the years it covers."""

  DCASE2020 = "2020"
  DCASE2021 = "2021"
  DCASE2022 = "2022-2026"  # 2022-2025 as their evaluators compute it; the 2026 task keeps the 2025 rules

  @property
  def has_domains(self) -> bool:
    """Whether the metrics are split by source/target domain (2020 had no domains)."""
    return self is not Protocol.DCASE2020

  @property
  def unit(self) -> str:
    """What one row of the evaluation is: a machine ID (2020) or a section."""
    return "machine ID" if self is Protocol.DCASE2020 else "section"

  def unit_name(self, machine: str, section: str) -> str:
    """How a row is named in tables and warnings: `fan id_00` (2020) or `fan section 00`."""
    return f"{machine} id_{section}" if self is Protocol.DCASE2020 else f"{machine} section {section}"

  @property
  def has_official_score(self) -> bool:
    """2020 ranked submissions against each other per machine type: there is no one score of one system."""
    return self is not Protocol.DCASE2020

  @property
  def title(self) -> str:
    return f"DCASE {self.value} Task 2"


def for_year(year: int | str) -> Protocol:
  """The protocol of a challenge year (2020-2026), or of a protocol's own name ("2022-2026").

  Raises:
    ValueError: naming the year, for anything else.
  """
  text = str(year).strip()
  for p in Protocol:
    if text == p.value:
      return p
  try:
    number = int(text)
  except ValueError:
    number = None
  if number is None or not FIRST_YEAR <= number <= LAST_YEAR:
    raise ValueError(f"year {year!r}: expected a DCASE Task 2 year {FIRST_YEAR}-{LAST_YEAR}")
  return {2020: Protocol.DCASE2020, 2021: Protocol.DCASE2021}.get(number, Protocol.DCASE2022)


def _protocol_of_path(path: str) -> Protocol:
  if _NAME_2020.match(os.path.basename(path)):
    return Protocol.DCASE2020
  if os.path.basename(os.path.dirname(path)) in TEST_DIRS_2021:
    return Protocol.DCASE2021
  return Protocol.DCASE2022


def detect(paths: Iterable[str]) -> Protocol:
  """The protocol of test clips from their paths (names and, for 2021, the folder they sit in).

  No paths, or only later-year names, give `DCASE2022`.

  Raises:
    ValueError: when the paths mix years (an example of each is named).
  """
  seen: dict[Protocol, str] = {}
  for path in paths:
    seen.setdefault(_protocol_of_path(path), path)
  if len(seen) > 1:
    examples = "; ".join(f"{p.title}: {path}" for p, path in seen.items())
    raise ValueError(f"the test clips mix the naming of several DCASE years ({examples}); evaluate each year's "
                     "clips on their own, or name the protocol (--year)")
  return next(iter(seen), Protocol.DCASE2022)


def resolve(year: int | str | Protocol | None, paths: Iterable[str] = ()) -> Protocol:
  """`year`'s protocol when given (an explicit choice wins), else `detect(paths)`."""
  if isinstance(year, Protocol):
    return year
  if year is None or str(year).strip() == "":
    return detect(paths)
  return for_year(year)
