"""The sources of a pre-training corpus: which audio files each one names, and which clips are usable.

A corpus is a list of sources (see `asd_jax.data.corpus` for the config). Each source is one of:

| kind     | `path`                                   | clips                                              |
| -------- | ---------------------------------------- | -------------------------------------------------- |
| `dcase`  | a DCASE Task 2 tree of any year          | every machine folder found below `path` (a folder  |
|          | (2020-2025, dev or eval, any unpacking)  | with `train/`, `test/` or `supplemental/`, or 2021's|
|          |                                          | `source_test/`, `target_test/`), parsed by          |
|          |                                          | `layout.scan_dataset`; test clips excluded          |
| `folder` | a folder tree (e.g. AudioSet)            | every `.wav` / `.flac` file below it               |
| `glob`   | a glob pattern (`**` recursive)          | every `.wav` / `.flac` file it matches             |

Test clips: the `test/` clips of a DCASE tree (2021: `source_test/`, `target_test/`) are excluded unless
`include_test`. That covers dev-set test
clips (a 2025 dev evaluation must not see its own test clips, and the past years' dev sets share machine
types and sometimes recordings with it) and evaluation-set test clips too: they are what an evaluation
scores, with hidden labels, and DCASE rules forbid training on the evaluation data. The evaluation sets'
`train/` folders (the "additional training data") are ordinary training clips and are included.
DCASE 2025 supplementary clips (`supplemental/`: clean machine sound and noise-only recordings) are
training material of the 2025 release with no test leakage, so they are included unless
`include_supplemental=False` (a project choice: noise-only clips are real factory sound, as useful to an
audio encoder as AudioSet's non-machine sounds). `folder` and `glob` sources know no splits: nothing is
excluded but what their `exclude` patterns (fnmatch, against the full path) name.

Channels: each source reads its files with a channel policy (`channels`, `asd_jax.audio.channels`; default the
corpus's `channels`, itself "mean" by default: the mix-down upstream EAT applies to its pre-training audio
(cwx-worst-one/EAT, `data/raw_audio_dataset.py`, `RawAudioDataset.postprocess`: a two-dimensional waveform is
averaged over its channels), and what every source read before the field existed). A DCASE 2026 tree (near/far pairs) can say
`channels="near"` or `"cancel"`.

Bad files: `read_clip` decodes a file with the project's loader (the source's channel policy, resampling to
the corpus rate) and raises `BadClip` naming the problem for an unreadable, empty, too short, silent or
non-finite file, and one whose channel count the policy cannot read (a mono file in a `cancel` source).
Packing and direct reading both list and skip such files (never stopping, never silently).
A file that two sources list (the same resolved path) is kept in the first source only.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import fnmatch
import glob as globlib
import multiprocessing
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import soundfile

from asd_jax.audio import channels as channels_lib
from asd_jax.audio import wav as wavlib
from asd_jax.data import layout
from asd_jax.data import records as rec

KINDS = ("dcase", "folder", "glob")
AUDIO_EXTENSIONS = (".wav", ".flac")
SOURCE_KEYS = ("path", "kind", "weight", "include_test", "include_supplemental", "exclude", "channels")
_MACHINE_SEARCH_DEPTH = 4  # how deep below a dcase path machine folders are looked for


class CorpusError(ValueError):
  """A corpus config or source that cannot be read; the message names the source and the problem."""


class BadClip(ValueError):
  """A file that cannot be a pre-training clip; the message says why (without the path)."""


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """One source of a corpus, as configured.

  Attributes:
    name: unique name (the config key, or `source<i>` for a list entry).
    path: a folder (dcase, folder) or a glob pattern (glob).
    kind: one of KINDS.
    weight: per-clip sampling weight, > 0 (see `asd_jax.data.corpus`).
    include_test: keep the `test/` clips of a dcase tree.
    include_supplemental: keep the `supplemental/` clips of a dcase tree.
    exclude: fnmatch patterns; files whose full path matches one are left out.
    channels: the channel policy its files are read with (`asd_jax.audio.channels`).
  """

  name: str
  path: str
  kind: str
  weight: float = 1.0
  include_test: bool = False
  include_supplemental: bool = True
  exclude: tuple[str, ...] = ()
  channels: str = channels_lib.LEGACY

  def to_json(self) -> dict[str, Any]:
    """JSON-able fields. `channels` is left out when it is the mix-down every source used before the field
    existed, so the fingerprints and manifests of packs written then still match their sources."""
    out = {**dataclasses.asdict(self), "exclude": list(self.exclude)}
    if self.channels == channels_lib.LEGACY:
      del out["channels"]
    return out


@dataclasses.dataclass(frozen=True)
class SourceFiles:
  """The files of one source that are candidate clips, and what was left out of it (counts)."""

  spec: SourceSpec
  paths: tuple[str, ...]  # sorted
  excluded: Mapping[str, int]  # reason ("test", "supplemental", "pattern", "duplicate") -> files


def _as_dict(entry: Any) -> dict[str, Any]:
  if hasattr(entry, "to_dict"):
    return entry.to_dict()
  if isinstance(entry, Mapping):
    return dict(entry)
  raise CorpusError(f"a source must be a dict with keys {SOURCE_KEYS}, got {entry!r}")


def source_specs(data_config: Any) -> list[SourceSpec]:
  """The configured sources, in a fixed order; sources with an empty `path` are skipped.

  `data_config.sources` is either a mapping name -> source dict (the form of the config files: fields
  can be overridden on the command line, `--config.data.sources.audioset.path=/data/as`; sources are taken
  in sorted name order) or a list of source dicts (named `source0`, `source1`, ...). Corpus-wide
  `include_test` / `include_supplemental` / `channels` are the defaults of the per-source keys.

  Raises:
    CorpusError: for an unknown key, kind or channel policy, a weight <= 0, or no source at all.
  """
  sources = data_config.sources
  if hasattr(sources, "items") or isinstance(sources, Mapping):
    named = [(str(k), _as_dict(v)) for k, v in sorted(sources.items())]
  elif isinstance(sources, Sequence) and not isinstance(sources, str):
    named = [(f"source{i}", _as_dict(v)) for i, v in enumerate(sources)]
  else:
    raise CorpusError(f"data.sources must be a mapping or a list of source dicts, got {sources!r}")
  defaults = {"include_test": bool(data_config.get("include_test", False)),
              "include_supplemental": bool(data_config.get("include_supplemental", True))}
  specs = []
  for name, entry in named:
    unknown = sorted(set(entry) - set(SOURCE_KEYS))
    if unknown:
      raise CorpusError(f"source {name!r}: unknown key(s) {unknown}; known: {list(SOURCE_KEYS)}")
    path = str(entry.get("path") or "")
    if not path:
      continue
    kind = entry.get("kind", "folder")
    if kind not in KINDS:
      raise CorpusError(f"source {name!r}: kind {kind!r} is not one of {KINDS}")
    weight = 1.0 if entry.get("weight") is None else float(entry["weight"])
    if not weight > 0:
      raise CorpusError(f"source {name!r}: weight must be > 0, got {weight}")
    exclude = entry.get("exclude") or ()
    exclude = (exclude,) if isinstance(exclude, str) else tuple(str(p) for p in exclude)
    flags = {k: bool(defaults[k] if entry.get(k) is None else entry[k]) for k in defaults}
    policy = entry.get("channels") or data_config.get("channels") or channels_lib.LEGACY
    if policy not in channels_lib.POLICIES:
      raise CorpusError(f"source {name!r}: channels {policy!r} is not one of {channels_lib.POLICIES}")
    specs.append(SourceSpec(name=name, path=path, kind=kind, weight=weight, exclude=exclude, channels=policy,
                            **flags))
  if not specs:
    raise CorpusError("the corpus has no source with a path (data.sources)")
  return specs


def _is_audio(name: str) -> bool:
  return name.lower().endswith(AUDIO_EXTENSIONS)


def machine_folders(root: pathlib.Path, max_depth: int = _MACHINE_SEARCH_DEPTH) -> list[pathlib.Path]:
  """Folders at or below `root` (at most `max_depth` levels) that hold `train/`, `test/` or `supplemental/`
  (or DCASE 2021's `source_test/` / `target_test/`). A machine folder is not searched further. Sorted by path.
  """
  def is_machine(p: pathlib.Path) -> bool:
    return any((p / d).is_dir() for d in layout.MACHINE_DIRS)

  found, frontier = [], [root]
  for _ in range(max_depth + 1):
    following = []
    for folder in frontier:
      if is_machine(folder):
        found.append(folder)
      else:
        following.extend(sorted(p for p in folder.iterdir() if p.is_dir()))
    frontier = following
  return sorted(found)


def _list_dcase(spec: SourceSpec, excluded: collections.Counter) -> list[str]:
  root = pathlib.Path(spec.path)
  if not root.is_dir():
    raise CorpusError(f"source {spec.name!r}: {root} is not a directory")
  if not machine_folders(root):
    raise CorpusError(f"source {spec.name!r}: no DCASE machine folder (with train/, test/ or supplemental/) "
                      f"at or below {root}")
  try:
    records = scan_tree(root)  # names only: bad files are rejected when read
  except layout.DatasetError as e:
    raise CorpusError(f"source {spec.name!r}: {e}") from None
  paths = []
  for r in records:
    if r.split == rec.SPLIT_TEST and not spec.include_test:
      excluded["test"] += 1
    elif r.split == rec.SPLIT_SUPPLEMENTAL and not spec.include_supplemental:
      excluded["supplemental"] += 1
    else:
      paths.append(r.path)
  return paths


def scan_tree(root: str | pathlib.Path) -> list[rec.ClipRecord]:
  """The clips of every DCASE machine folder at or below `root` (`machine_folders`), DCASE 2021's `source_test/`
  and `target_test/` included, from their names only (no audio is opened).

  Raises:
    layout.DatasetError: listing every name no scheme matches and every clip in the wrong split folder; for a
      `root` that is no folder or holds no machine folder.
  """
  root = pathlib.Path(root)
  if not root.is_dir():
    raise layout.DatasetError(root, [f"{root}: not a directory"])
  folders = machine_folders(root)
  if not folders:
    raise layout.DatasetError(root, [f"{root}: no DCASE machine folder (with train/, test/, supplemental/, "
                                     "source_test/ or target_test/) at or below it"])
  problems, records = [], []
  for folder in folders:
    try:
      records.extend(layout.scan_dataset(folder, audio=False))
    except layout.DatasetError as e:
      problems.extend(e.problems)
  if problems:
    raise layout.DatasetError(root, problems)
  return records


def _list_folder(spec: SourceSpec) -> list[str]:
  root = pathlib.Path(spec.path)
  if not root.is_dir():
    raise CorpusError(f"source {spec.name!r}: {root} is not a directory")
  paths = []
  for folder, dirs, files in os.walk(root, followlinks=True):
    dirs.sort()
    paths.extend(os.path.join(folder, f) for f in sorted(files) if _is_audio(f))
  return paths


def _list_glob(spec: SourceSpec) -> list[str]:
  return [p for p in globlib.glob(spec.path, recursive=True) if _is_audio(p) and os.path.isfile(p)]


def list_source(spec: SourceSpec) -> SourceFiles:
  """The candidate clips of one source (sorted paths) and the counts of what was left out.

  Raises:
    CorpusError: a missing folder, a DCASE tree with unparseable names (all listed), or no file at all.
  """
  excluded = collections.Counter()
  lister = {"dcase": lambda: _list_dcase(spec, excluded), "folder": lambda: _list_folder(spec),
            "glob": lambda: _list_glob(spec)}[spec.kind]
  paths = sorted(lister())
  if spec.exclude:
    kept = [p for p in paths if not any(fnmatch.fnmatch(p, pattern) for pattern in spec.exclude)]
    excluded["pattern"] += len(paths) - len(kept)
    paths = kept
  if not paths:
    left_out = ", ".join(f"{n} {why}" for why, n in sorted(excluded.items())) or "none"
    raise CorpusError(f"source {spec.name!r} ({spec.kind} {spec.path}): no audio clip ({', '.join(AUDIO_EXTENSIONS)}) "
                      f"left (files left out: {left_out}; see include_test / include_supplemental / exclude)")
  return SourceFiles(spec, tuple(paths), dict(excluded))


def list_sources(specs: Iterable[SourceSpec]) -> list[SourceFiles]:
  """`list_source` of each spec; a file already listed by an earlier source (same real path) is dropped."""
  seen: set[str] = set()
  out = []
  for spec in specs:
    files = list_source(spec)
    kept = []
    for p in files.paths:
      real = os.path.realpath(p)
      if real not in seen:
        seen.add(real)
        kept.append(p)
    excluded = dict(files.excluded)
    if len(kept) < len(files.paths):
      excluded["duplicate"] = len(files.paths) - len(kept)
    if not kept:
      raise CorpusError(f"source {spec.name!r}: every file is already listed by an earlier source")
    out.append(SourceFiles(spec, tuple(kept), excluded))
  names = collections.Counter(f.spec.name for f in out)
  if max(names.values()) > 1:
    raise CorpusError(f"source names must be unique, got {sorted(n for n, c in names.items() if c > 1)}")
  return out


def read_clip(path: str | os.PathLike, *, sample_rate: int, min_seconds: float,
              channels: str = channels_lib.LEGACY) -> np.ndarray:
  """Decodes one file -> float32 [samples] mono at `sample_rate` under the channel policy `channels`, the whole
  file (no crop, no pad).

  Raises:
    BadClip: unreadable (any error of the loader), empty, a channel count `channels` cannot read, shorter than
      `min_seconds`, non-finite samples (NaN/inf, e.g. in a float wav), or silent (every sample exactly 0).
  """
  try:
    info = soundfile.info(str(path))
  except (soundfile.LibsndfileError, RuntimeError, OSError) as e:
    raise BadClip(f"unreadable: {e}") from e
  if info.frames == 0:
    raise BadClip("empty: 0 samples")
  problem = channels_lib.channel_problem(channels, info.channels)
  if problem:
    raise BadClip(f"wrong channel count: {problem}")
  try:
    wav = wavlib.load_wav(path, sample_rate=sample_rate, duration_s=None, channels=channels)
  except wavlib.NonFiniteWavError as e:
    raise BadClip(f"non-finite samples: {e}") from e
  except (wavlib.WavError, ValueError, OSError, RuntimeError) as e:
    raise BadClip(f"unreadable: {e}") from e
  if wav.size == 0:
    raise BadClip("empty: 0 samples")
  if not np.isfinite(wav).all():
    raise BadClip(f"non-finite samples: {int(np.sum(~np.isfinite(wav)))} NaN/inf of {wav.size}")
  if wav.size < min_seconds * sample_rate:
    raise BadClip(f"too short: {wav.size / sample_rate:.3f} s < min_seconds {min_seconds:g} s")
  if not np.any(wav):
    raise BadClip("silent: every sample is 0")
  return wav


def check_clip(path: str, sample_rate: int, min_seconds: float, channels: str = channels_lib.LEGACY
               ) -> tuple[str, int | None, str | None]:
  """(path, samples, None) for a good clip, (path, None, reason) for a bad one; picklable for pools."""
  try:
    return path, int(read_clip(path, sample_rate=sample_rate, min_seconds=min_seconds, channels=channels).size), None
  except BadClip as e:
    return path, None, str(e)


@contextlib.contextmanager
def worker_pool(num_workers: int):
  """A `spawn` process pool of `num_workers` (None for 0: work in this process).

  spawn, not fork: the parent may hold threads (JAX, Grain) that make a forked child unsafe.
  """
  if num_workers <= 0:
    yield None
    return
  with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
    yield pool


def check_clips(paths: Sequence[str], *, sample_rate: int, min_seconds: float, num_workers: int = 0,
                channels: str = channels_lib.LEGACY) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
  """Decodes every file once: ([(path, samples)] of the good clips, [(path, reason)] of the bad), in order."""
  check = functools.partial(check_clip, sample_rate=sample_rate, min_seconds=min_seconds, channels=channels)
  with worker_pool(num_workers) as pool:
    results = list(pool.imap(check, paths, chunksize=8) if pool is not None else map(check, paths))
  good = [(p, n) for p, n, reason in results if reason is None]
  bad = [(p, reason) for p, _, reason in results if reason is not None]
  return good, bad
