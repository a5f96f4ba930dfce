"""The classification label space of the auxiliary task: machine type x attribute combination.

Each class is one (machine type, attribute combination) seen in the records, plus, for each
machine type with DCASE 2025 supplementary recordings, one class for its clean-machine clips
(`<machine>/clean`) and one for its noise-only clips (`<machine>/noise`), whatever attributes
those carry. Machine clips without attributes form `<machine>/noAttribute`. Classes are sorted
by name, so the same records always give the same integer ids. The space is saved as JSON next
to checkpoints and embeddings; `load` re-checks it, and `check_covers` verifies that records
map into it, so ids can always be mapped back to meanings.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Iterable, Sequence

from asd_jax import atomic
from asd_jax.data import filenames
from asd_jax.data import records as rec

FORMAT = "asd_jax.label_space"
VERSION = 1


@dataclasses.dataclass(frozen=True)
class ClassInfo:
  """One class: its name, machine type, kind and (for machine clips) attributes."""

  name: str
  machine: str
  kind: str
  attributes: tuple[tuple[str, str], ...]


def class_of(record: rec.ClipRecord) -> ClassInfo:
  """The class a record belongs to (supplementary clips ignore their attributes)."""
  if record.kind in (rec.KIND_CLEAN, rec.KIND_NOISE):
    return ClassInfo(f"{record.machine}/{record.kind}", record.machine, record.kind, ())
  if record.kind != rec.KIND_MACHINE:
    raise ValueError(f"{record.path}: unknown record kind {record.kind!r}")
  return ClassInfo(f"{record.machine}/{filenames.attribute_string(record.attributes)}",
                   record.machine, rec.KIND_MACHINE, tuple(record.attributes))


@dataclasses.dataclass(frozen=True)
class LabelSpace:
  """Sorted, unique classes; `index(record)` gives the int32 label of a record."""

  classes: tuple[ClassInfo, ...]

  def __post_init__(self):
    names = [c.name for c in self.classes]
    if names != sorted(names) or len(set(names)) != len(names):
      raise ValueError("label space classes must be unique and sorted by name")
    object.__setattr__(self, "_index", {n: i for i, n in enumerate(names)})

  @classmethod
  def from_records(cls, records: Iterable[rec.ClipRecord]) -> LabelSpace:
    """One class per distinct `class_of(record)` (pass training + supplementary records)."""
    by_name: dict[str, ClassInfo] = {}
    for r in records:
      info = class_of(r)
      by_name.setdefault(info.name, info)
    if not by_name:
      raise ValueError("cannot build a label space from no records")
    return cls(tuple(by_name[n] for n in sorted(by_name)))

  @property
  def num_classes(self) -> int:
    return len(self.classes)

  @property
  def names(self) -> list[str]:
    return [c.name for c in self.classes]

  def index(self, record: rec.ClipRecord, default: int | None = None) -> int:
    """The class id of `record`; `default` when it has no class (else KeyError naming it)."""
    name = class_of(record).name
    if name in self._index:
      return self._index[name]
    if default is not None:
      return default
    raise KeyError(f"{record.path}: class {name!r} is not in the label space "
                   f"({self.num_classes} classes)")

  def labels(self, records: Sequence[rec.ClipRecord], default: int | None = None) -> list[int]:
    return [self.index(r, default) for r in records]

  def check_covers(self, records: Iterable[rec.ClipRecord]) -> None:
    """Raises ValueError listing every record whose class is missing from this space."""
    missing = sorted({f"{class_of(r).name} (e.g. {r.path})" for r in records
                      if class_of(r).name not in self._index})
    if missing:
      raise ValueError(f"{len(missing)} class(es) missing from the label space: {missing[:20]}")

  def to_json(self) -> str:
    body = {"format": FORMAT, "version": VERSION, "num_classes": self.num_classes,
            "classes": [{"name": c.name, "machine": c.machine, "kind": c.kind,
                         "attributes": [list(a) for a in c.attributes]} for c in self.classes]}
    return json.dumps(body, indent=1)

  def save(self, path: str | pathlib.Path) -> None:
    """Writes `to_json()` to `path` atomically (a reader never sees half a file)."""
    atomic.write_text(path, self.to_json() + "\n")

  @classmethod
  def from_json(cls, text: str, *, source: str = "<string>") -> LabelSpace:
    """Parses and checks a saved label space (format, count, names vs. fields, order)."""
    try:
      body = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f"{source}: not JSON: {e}") from e
    if body.get("format") != FORMAT or body.get("version") != VERSION:
      raise ValueError(f"{source}: expected format {FORMAT!r} version {VERSION}, found "
                       f"{body.get('format')!r} version {body.get('version')!r}")
    classes = []
    for i, c in enumerate(body["classes"]):
      info = ClassInfo(c["name"], c["machine"], c["kind"], tuple(tuple(a) for a in c["attributes"]))
      probe = rec.ClipRecord(path="", machine=info.machine, section="", split="",
                             attributes=info.attributes, kind=info.kind)
      if class_of(probe) != info:
        raise ValueError(f"{source}: class {i} name {info.name!r} does not match its fields "
                         f"(expected {class_of(probe).name!r})")
      classes.append(info)
    if body.get("num_classes") != len(classes):
      raise ValueError(f"{source}: num_classes {body.get('num_classes')} but {len(classes)} classes")
    try:
      return cls(tuple(classes))
    except ValueError as e:
      raise ValueError(f"{source}: {e}") from e

  @classmethod
  def load(cls, path: str | pathlib.Path) -> LabelSpace:
    path = pathlib.Path(path)
    return cls.from_json(path.read_text(), source=str(path))
