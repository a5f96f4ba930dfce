"""A packed pre-training corpus: ArrayRecord shards of decoded 16 kHz mono clips, and their manifest.

`pack(data_config, out_dir)` (CLI: `python -m asd_jax.data.pack`) decodes every clip of a corpus once with
the project's loader (each source's channel policy, resampling; `corpus_sources.read_clip`), skips and lists bad files,
and writes per source `out_dir/s<source>-<shard>.array_record` files (ArrayRecord, Grain's random-access
format, `group_size:1` so that any record is one read) plus `out_dir/manifest.json`.

One record is one whole clip (longer clips are kept whole, so the reader can crop anywhere):
`b"ASDC"`, a little-endian uint32 header length, a UTF-8 JSON header `{"source", "path", "samples",
"sample_rate", "encoding"}`, then the samples. Encodings: `pcm16` (default; int16 little-endian, x * 32768
rounded and clipped; a 16-bit source at the corpus rate round-trips exactly, and a crop is read without
decoding the rest) or `flac` (the same int16 samples FLAC-compressed: 74 % of the size on the synthetic DCASE
clips, whose background noise compresses little; about 10x slower to read). Chunks are stored uncompressed:
ArrayRecord's default zstd saved 6 % on such audio and cost 2 ms per 10 s record to read.

The manifest (JSON, always replaced atomically) records the settings, a fingerprint of the corpus (settings,
sources and their file lists), and per source: files listed, files left out by the listing, clips, hours,
clipped samples, the rejected files with their reason, and its shards with clips, bytes and SHA-256.

Resumable: a shard is written under a temporary name and renamed when complete; the manifest, rewritten
after every shard, lists only renamed shards (`"complete": false` until the last). Re-running the same
pack skips the shards the manifest lists (after checking their size and checksum), deletes temporary and
unlisted files, and writes the rest; a different corpus in the same folder is refused unless `overwrite`.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pathlib
import struct
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import soundfile

from asd_jax import atomic
from asd_jax.data import corpus_sources as cs

FORMAT = "asd_jax.packed_corpus.v1"
MANIFEST = "manifest.json"
ENCODINGS = ("pcm16", "flac")
SHARD_SUFFIX = ".array_record"
_TMP_SUFFIX = ".tmp"
_MAGIC = b"ASDC"
_PCM_SCALE = 32768.0
_WRITER_OPTIONS = "group_size:1,uncompressed"  # one record per chunk: a random read is one record; see pack()


class PackError(ValueError):
  """A packed corpus folder that cannot be written or read as asked; the message names it."""


# ---------------------------------------------------------------------------------------------- records

def to_pcm16(wav: np.ndarray) -> tuple[np.ndarray, int]:
  """float32 [samples] -> (int16 [samples] = round(x * 32768) clipped, number of clipped samples).

  Exact in float32: scaling by a power of two and rounding to an integer lose nothing.
  """
  scaled = np.rint(np.asarray(wav, np.float32) * np.float32(_PCM_SCALE))
  clipped = int(np.count_nonzero(np.abs(scaled + np.float32(0.5)) > np.float32(32767.5)))
  return np.clip(scaled, -32768, 32767).astype("<i2"), clipped


def encode_record(wav: np.ndarray, *, encoding: str, sample_rate: int, path: str, source: int) -> tuple[bytes, int]:
  """One clip `float32 [samples]` -> (record bytes, clipped samples); see the module docstring."""
  if encoding not in ENCODINGS:
    raise PackError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
  pcm, clipped = to_pcm16(wav)
  if encoding == "pcm16":
    payload = pcm.tobytes()
  else:
    buffer = io.BytesIO()
    soundfile.write(buffer, pcm, sample_rate, format="FLAC", subtype="PCM_16")
    payload = buffer.getvalue()
  header = json.dumps({"source": source, "path": path, "samples": int(pcm.size),
                       "sample_rate": sample_rate, "encoding": encoding}).encode()
  return _MAGIC + struct.pack("<I", len(header)) + header + payload, clipped


def decode_header(record: bytes) -> tuple[dict[str, Any], int]:
  """(header dict, payload offset) of a record."""
  if record[:4] != _MAGIC:
    raise PackError(f"not a packed-corpus record (starts with {record[:4]!r}, expected {_MAGIC!r})")
  (length,) = struct.unpack_from("<I", record, 4)
  return json.loads(record[8:8 + length]), 8 + length


def decode_samples(record: bytes, header: dict[str, Any], offset: int, start: int = 0,
                   count: int | None = None) -> np.ndarray:
  """Samples `[start, start + count)` of a record as float32 (int16 / 32768). -> [count]"""
  total = header["samples"]
  count = total - start if count is None else count
  if not 0 <= start <= start + count <= total:
    raise PackError(f"samples [{start}, {start + count}) outside a clip of {total} samples")
  if header["encoding"] == "pcm16":
    pcm = np.frombuffer(record, dtype="<i2", count=count, offset=offset + 2 * start)
  else:
    with soundfile.SoundFile(io.BytesIO(record[offset:])) as f:
      f.seek(start)
      pcm = f.read(count, dtype="int16")
  return pcm.astype(np.float32) / np.float32(_PCM_SCALE)


# ---------------------------------------------------------------------------------------------- files

def sha256_file(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(1 << 22):
      digest.update(chunk)
  return digest.hexdigest()


def shard_name(source_index: int, shard_index: int) -> str:
  return f"s{source_index:03d}-{shard_index:05d}{SHARD_SUFFIX}"


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any]:
  """The manifest of a packed corpus folder (complete or not)."""
  path = pathlib.Path(out_dir) / MANIFEST
  try:
    manifest = json.loads(path.read_text())
  except FileNotFoundError as e:
    raise PackError(f"{out_dir}: no {MANIFEST}; not a packed corpus (write one with "
                    "python -m asd_jax.data.pack)") from e
  except json.JSONDecodeError as e:
    raise PackError(f"{path}: not valid JSON: {e}") from e
  if manifest.get("format") != FORMAT:
    raise PackError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
  return manifest


def verify(out_dir: str | os.PathLike, *, checksums: bool = True) -> list[str]:
  """Problems of a packed corpus: incomplete, missing or resized shards, wrong checksums ([] if none)."""
  out = pathlib.Path(out_dir)
  manifest = read_manifest(out)
  problems = [] if manifest["complete"] else [f"{out}: packing is not complete (re-run the pack)"]
  for source in manifest["sources"]:
    for shard in source["shards"]:
      path = out / shard["file"]
      if not path.is_file():
        problems.append(f"{path}: missing")
      elif path.stat().st_size != shard["bytes"]:
        problems.append(f"{path}: {path.stat().st_size} bytes, the manifest says {shard['bytes']}")
      elif checksums and sha256_file(path) != shard["sha256"]:
        problems.append(f"{path}: SHA-256 differs from the manifest's")
  return problems


def open_packed(out_dir: str | os.PathLike, *, check_sizes: bool = True) -> dict[str, Any]:
  """The manifest of a complete packed corpus, after checking that every shard exists with its size.

  Raises:
    PackError: incomplete pack, missing or resized shard (checksums: `verify`).
  """
  manifest = read_manifest(out_dir)
  if check_sizes:
    problems = verify(out_dir, checksums=False)
    if problems:
      raise PackError(f"packed corpus {out_dir} is not usable:\n  " + "\n  ".join(problems[:20]))
  return manifest


# ---------------------------------------------------------------------------------------------- packing

def _decode_for_pack(task: tuple[int, str, str], *, sample_rate: int, min_seconds: float, encoding: str):
  """(source index, path, channel policy) -> (path, record | None, samples, clipped, reason); runs in pool
  workers."""
  source, path, channels = task
  try:
    wav = cs.read_clip(path, sample_rate=sample_rate, min_seconds=min_seconds, channels=channels)
  except cs.BadClip as e:
    return path, None, 0, 0, str(e)
  record, clipped = encode_record(wav, encoding=encoding, sample_rate=sample_rate, path=path, source=source)
  return path, record, int(wav.size), clipped, None


def _fingerprint(settings: dict[str, Any], listed: Sequence[cs.SourceFiles]) -> str:
  digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
  for files in listed:
    digest.update(json.dumps(files.spec.to_json(), sort_keys=True).encode())
    digest.update("\n".join(files.paths).encode())
  return digest.hexdigest()


def _source_entry(files: cs.SourceFiles, shards: list[dict], rejected: list[dict], sample_rate: int) -> dict:
  samples = sum(s["samples"] for s in shards)
  return {**files.spec.to_json(), "files": len(files.paths), "excluded": dict(files.excluded),
          "clips": sum(s["clips"] for s in shards), "hours": samples / sample_rate / 3600,
          "clipped_samples": sum(s["clipped_samples"] for s in shards),
          "rejected": rejected, "shards": shards}


def _manifest(settings, fingerprint, listed, shards, rejected, complete) -> dict[str, Any]:
  sources = [_source_entry(f, shards[i], rejected[i], settings["sample_rate"]) for i, f in enumerate(listed)]
  return {"format": FORMAT, "complete": complete, "fingerprint": fingerprint, "settings": settings,
          "sources": sources,
          "totals": {"clips": sum(s["clips"] for s in sources), "hours": sum(s["hours"] for s in sources),
                     "rejected": sum(len(s["rejected"]) for s in sources),
                     "shards": sum(len(s["shards"]) for s in sources)}}


def _prepare_folder(out: pathlib.Path, fingerprint: str, overwrite: bool) -> dict | None:
  """The previous manifest to resume from (None: start afresh); removes temporary files."""
  out.mkdir(parents=True, exist_ok=True)
  ours = [p for p in out.iterdir() if p.name.endswith((SHARD_SUFFIX, _TMP_SUFFIX)) or p.name == MANIFEST]
  previous = None
  if (out / MANIFEST).exists() and not overwrite:
    previous = read_manifest(out)
    if previous["fingerprint"] != fingerprint:
      raise PackError(f"{out} holds a pack of another corpus or other settings (fingerprint differs); use "
                      "another folder, or --overwrite to replace it")
  elif ours and not overwrite:
    raise PackError(f"{out} holds shard files but no {MANIFEST}; use another folder, or --overwrite")
  if overwrite:
    for p in ours:
      p.unlink()
  for p in out.iterdir():
    if p.name.endswith(_TMP_SUFFIX):
      p.unlink()
  return previous


def pack(data_config: Any, out_dir: str | os.PathLike, *, clips_per_shard: int = 1024, encoding: str = "pcm16",
         num_workers: int = 0, overwrite: bool = False, max_new_shards: int | None = None,
         progress: bool = True) -> dict[str, Any]:
  """Packs the corpus of `data_config` (`asd_jax.data.corpus`) into `out_dir`; resumes an unfinished pack.

  Args:
    data_config: the corpus config (sources, sample_rate, min_seconds, include_test, ...).
    out_dir: output folder (absent, empty, or an unfinished/finished pack of the same corpus).
    clips_per_shard: files per shard (fewer clips when some are rejected). 1024 clips of 10 s in pcm16 are
      about 330 MB.
    encoding: "pcm16" or "flac" (see the module docstring).
    num_workers: decoding processes (0: in this process).
    overwrite: replace whatever pack `out_dir` holds.
    max_new_shards: stop after writing this many shards (the manifest stays incomplete; re-run to continue).
    progress: show a tqdm bar on stderr.

  Returns:
    The manifest (also in `out_dir/manifest.json`).
  """
  if clips_per_shard < 1:
    raise PackError(f"clips_per_shard must be >= 1, got {clips_per_shard}")
  if encoding not in ENCODINGS:
    raise PackError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
  sample_rate = int(data_config.sample_rate)
  settings = {"sample_rate": sample_rate, "encoding": encoding, "clips_per_shard": int(clips_per_shard),
              "min_seconds": float(data_config.min_seconds)}
  listed = cs.list_sources(cs.source_specs(data_config))
  fingerprint = _fingerprint(settings, listed)
  out = pathlib.Path(out_dir)
  previous = _prepare_folder(out, fingerprint, overwrite)
  shards: list[list[dict]] = [[] for _ in listed]
  rejected: list[list[dict]] = [[] for _ in listed]
  if previous is not None:
    for i, source in enumerate(previous["sources"]):
      for shard in source["shards"]:
        path = out / shard["file"]
        if path.is_file() and path.stat().st_size == shard["bytes"] and sha256_file(path) == shard["sha256"]:
          shards[i].append(shard)
      done = {s["index"] for s in shards[i]}
      rejected[i] = [r for r in source["rejected"] if r["shard"] in done]
  keep = {s["file"] for per_source in shards for s in per_source}
  for p in out.iterdir():  # shards renamed after the last manifest write, or failing their checks
    if p.name.endswith(SHARD_SUFFIX) and p.name not in keep:
      p.unlink()
  done = [{s["index"] for s in per_source} for per_source in shards]
  jobs = [(i, k, files.paths[start:start + clips_per_shard])
          for i, files in enumerate(listed)
          for k, start in enumerate(range(0, len(files.paths), clips_per_shard)) if k not in done[i]]
  if max_new_shards is not None:
    jobs = jobs[:max_new_shards]
  total_files = sum(len(paths) for _, _, paths in jobs)
  decode = functools.partial(_decode_for_pack, sample_rate=sample_rate, min_seconds=settings["min_seconds"],
                             encoding=encoding)
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  bar = tqdm(total=total_files, unit="file", desc=f"pack {out.name}", disable=not progress, file=sys.stderr)
  with cs.worker_pool(num_workers) as pool:
    for i, k, paths in jobs:
      tasks = [(i, p, listed[i].spec.channels) for p in paths]
      results: Iterator = (pool.imap(decode, tasks, chunksize=4) if pool is not None else map(decode, tasks))
      name = shard_name(i, k)
      tmp = out / (name + _TMP_SUFFIX)
      writer = array_record_module.ArrayRecordWriter(str(tmp), _WRITER_OPTIONS)
      clips = samples = clipped = 0
      bad = []
      for path, record, n, c, reason in results:
        if record is None:
          bad.append({"path": path, "reason": reason, "shard": k})
        else:
          writer.write(record)
          clips, samples, clipped = clips + 1, samples + n, clipped + c
        bar.update(1)
      writer.close()
      os.replace(tmp, out / name)
      shards[i].append({"file": name, "index": k, "files": len(paths), "clips": clips, "samples": samples,
                        "clipped_samples": clipped, "bytes": (out / name).stat().st_size,
                        "sha256": sha256_file(out / name)})
      shards[i].sort(key=lambda s: s["index"])
      rejected[i] = sorted(rejected[i] + bad, key=lambda r: (r["shard"], r["path"]))
      atomic.write_json(out / MANIFEST, _manifest(settings, fingerprint, listed, shards, rejected, False))
  bar.close()
  expected = [-(-len(f.paths) // clips_per_shard) for f in listed]
  complete = all(len(shards[i]) == n for i, n in enumerate(expected))
  manifest = _manifest(settings, fingerprint, listed, shards, rejected, complete)
  atomic.write_json(out / MANIFEST, manifest)
  return manifest


def format_summary(manifest: dict[str, Any], *, show_rejected: int = 10) -> str:
  """A plain-text summary of a manifest: clips, hours, rejected files per source."""
  t = manifest["totals"]
  state = "complete" if manifest["complete"] else "NOT complete (re-run to continue)"
  lines = [f"packed corpus ({state}): {t['clips']} clips, {t['hours']:.2f} h, {t['shards']} shards, "
           f"{t['rejected']} rejected files; {manifest['settings']['encoding']} at "
           f"{manifest['settings']['sample_rate']} Hz"]
  for s in manifest["sources"]:
    left_out = ", ".join(f"{n} {why}" for why, n in sorted(s["excluded"].items()))
    lines.append(f"  {s['name']} ({s['kind']} {s['path']}, weight {s['weight']:g}): {s['clips']} clips, "
                 f"{s['hours']:.2f} h, {len(s['rejected'])} rejected of {s['files']} files"
                 + (f"; left out by the listing: {left_out}" if left_out else "")
                 + (f"; {s['clipped_samples']} samples clipped to int16" if s["clipped_samples"] else ""))
    for r in s["rejected"][:show_rejected]:
      lines.append(f"    rejected {r['path']}: {r['reason']}")
    if len(s["rejected"]) > show_rejected:
      lines.append(f"    ... and {len(s['rejected']) - show_rejected} more (see {MANIFEST})")
  return "\n".join(lines)

