"""Encoder weights on disk: reading PyTorch `.pt` files safely, strict key checking, and saving/restoring
converted Flax parameters (the training state's checkpoints are `asd_jax.checkpoints.train_state`).

Each encoder module (beats.py, eat.py) owns its key mapping; this module owns what they share:
`load_torch_checkpoint` (always `weights_only=True`, never arbitrary unpickling), `check_state_dict`
(refuses missing, unexpected, mis-shaped or non-finite tensors with one message listing all of them), and a
converted checkpoint format: a directory holding `params/` (an Orbax `StandardCheckpointer` tree of float32
arrays) and `config.json` (`{"model": name, "config": {...}, "files": {path: {"size", "sha256"}}}`).

A converted folder is written next to its destination and renamed into place (a kill leaves the old folder
or the new one), and `files` lists the size and SHA-256 of every file under `params/`. `restore_converted`
checks them before Orbax opens anything (one SHA-256 pass over the files, 360 MB for BEATs), so a flipped
byte, a missing or truncated chunk is refused with one line naming the folder and the file, never loaded as
silent garbage or reported as a TensorStore traceback. A damaged file (a truncated `.pt`, a folder that is
missing its `config.json`) is a `DamagedCheckpointError`, also one line.
"""

from __future__ import annotations

import collections.abc
import hashlib
import json
import os
import pathlib
import pickle
import shutil
from typing import Any

import jax
import numpy as np
from absl import logging

from asd_jax import atomic
from asd_jax import errors

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
FILES_KEY = "files"  # config.json entry: {path under the folder: {"size": bytes, "sha256": hex}}


class CheckpointError(ValueError):
  """A checkpoint whose contents don't match the model: lists every missing/unexpected/mis-shaped key."""

  def __init__(self, source: str, *, missing=(), unexpected=(), misshaped=(), problems=()):
    self.source = source
    self.missing = sorted(missing)
    self.unexpected = sorted(unexpected)
    self.misshaped = sorted(misshaped)  # (key, expected shape, found shape)
    self.problems = list(problems)
    lines = [f"checkpoint {source} does not match the model:"]
    if self.missing:
      lines.append(f"  missing {len(self.missing)} key(s): " + ", ".join(self.missing))
    if self.unexpected:
      lines.append(f"  unexpected {len(self.unexpected)} key(s): " + ", ".join(self.unexpected))
    for key, expected, found in self.misshaped:
      lines.append(f"  {key}: expected shape {tuple(expected)}, found {tuple(found)}")
    lines += [f"  {p}" for p in self.problems]
    super().__init__("\n".join(lines))


class DamagedCheckpointError(CheckpointError):
  """A checkpoint that cannot be read as what it claims to be (damaged, truncated, incomplete): one line,
  `checkpoint <source>: <problem>[; <remedy>]` (a caller that knows a better remedy uses `problem`)."""

  def __init__(self, source: str, problem: str, remedy: str = ""):
    super().__init__(source, problems=[problem])
    self.problem = problem
    ValueError.__init__(self, f"checkpoint {source}: {problem}" + (f"; {remedy}" if remedy else ""))


def _torch_reason(error: BaseException, path: pathlib.Path) -> str:
  """Why torch.load failed, in our words: PyTorch's own text for a weights-only refusal recommends
  `weights_only=False`, which is never an option here (unrestricted unpickling can run arbitrary code)."""
  if isinstance(error, pickle.UnpicklingError):
    import torch  # pylint: disable=g-import-not-at-top
    try:
      names = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(str(path))) or "unknown"
    except Exception:  # noqa: BLE001  (a damaged file: the refusal itself says enough)
      names = "unknown"
    return (f"torch.load(weights_only=True) refuses it: its pickle needs classes outside PyTorch's "
            f"weights-only allow-list ({names}). asd_jax only reads checkpoints with weights_only=True; a loader "
            "for this checkpoint format would have to allow exactly those classes (safe_globals)")
  text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  text = text.split(". ")[0]  # PyTorch's first sentence says what failed; the rest is advice
  if "weights_only" in text:
    text = type(error).__name__
  return f"torch.load(weights_only=True) cannot read it ({text}); is the file complete?"


def load_torch_checkpoint(path: str | os.PathLike, *, safe_globals: collections.abc.Sequence[Any] = ()
                          ) -> dict[str, Any]:
  """Reads a PyTorch checkpoint with `torch.load(weights_only=True)` on CPU.

  `safe_globals` are extra classes allowed in the pickle (e.g. `argparse.Namespace` in a config); there is
  no fallback to unrestricted unpickling. Raises `CheckpointError` naming the file if it can't be read.
  """
  import torch  # Imported lazily: only conversion needs PyTorch.

  path = pathlib.Path(path)
  if path.is_dir():
    raise DamagedCheckpointError(str(path), f"is a folder without {CONFIG_FILE} or {PARAMS_DIR}/, not a "
                                 "converted checkpoint or a .pt file")
  if not path.is_file():
    raise FileNotFoundError(f"checkpoint {path} does not exist")
  try:
    with torch.serialization.safe_globals(list(safe_globals)):
      checkpoint = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises pickle.UnpicklingError, RuntimeError, ... depending on the file.
    raise DamagedCheckpointError(str(path), _torch_reason(e, path)) from e
  if not isinstance(checkpoint, dict):
    raise CheckpointError(str(path), problems=[f"expected a dict at the top level, found {type(checkpoint)}"])
  return checkpoint


def state_dict_to_numpy(state_dict: collections.abc.Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Converts a mapping of torch tensors (or arrays) to float32/int NumPy arrays, keys unchanged."""
  out = {}
  for key, value in state_dict.items():
    if hasattr(value, "detach"):
      value = value.detach().cpu()
      if value.is_floating_point():
        value = value.float()
      value = value.numpy()
    out[key] = np.asarray(value)
  return out


def _shape(value: Any) -> tuple[int, ...]:
  return tuple(value.shape) if hasattr(value, "shape") else tuple(np.shape(value))


def _is_finite(value: Any) -> bool:
  """False if a floating tensor/array holds NaN or inf (torch tensors are checked by torch: bfloat16 ones
  have no NumPy dtype)."""
  if hasattr(value, "detach"):
    import torch  # pylint: disable=g-import-not-at-top  (a torch tensor: torch is there)
    return not value.is_floating_point() or bool(torch.isfinite(value).all())
  array = np.asarray(value)
  return not np.issubdtype(array.dtype, np.inexact) or bool(np.isfinite(array).all())


def check_state_dict(state_dict: collections.abc.Mapping[str, Any],
                     expected_shapes: collections.abc.Mapping[str, tuple[int, ...]], *, source: str,
                     ignore: collections.abc.Container[str] = ()) -> None:
  """Raises `CheckpointError` unless `state_dict` (key -> tensor/array) has exactly the keys and shapes of
  `expected_shapes` (key -> shape tuple), all finite.

  Keys in `ignore` may be present or absent (e.g. training-only tensors a converter drops on purpose); they
  are not checked.
  """
  found = {k for k in state_dict if k not in ignore}
  wanted = set(expected_shapes)
  misshaped = [(k, tuple(expected_shapes[k]), _shape(state_dict[k]))
               for k in sorted(found & wanted) if _shape(state_dict[k]) != tuple(expected_shapes[k])]
  if wanted - found or found - wanted or misshaped:
    raise CheckpointError(source, missing=wanted - found, unexpected=found - wanted, misshaped=misshaped)
  non_finite = [k for k in sorted(found) if not _is_finite(state_dict[k])]
  if non_finite:
    raise CheckpointError(source, problems=[f"{len(non_finite)} tensor(s) hold NaN or inf values: "
                                            + ", ".join(non_finite)])


def flatten_params(params: Any) -> dict[str, np.ndarray]:
  """`{'a/b/kernel': array}` view of a nested parameter dict (paths joined with '/')."""
  return {"/".join(str(getattr(k, "key", k)) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def count_params(params: Any) -> int:
  """Number of scalars in a parameter tree (works on `jax.ShapeDtypeStruct` leaves too)."""
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def checkpoint_digest(path: str | os.PathLike) -> str:
  """"sha256:<hex>" naming the content of an encoder checkpoint, for provenance: of a converted folder's
  `config.json` (it holds the SHA-256 of every file under `params/`, which loading checks, so one small read names
  the whole), of a `.pt` or `.safetensors` file's bytes, or of every file of another folder (the HuggingFace
  port), in name order. Raises FileNotFoundError naming `path` when it does not exist."""
  path = pathlib.Path(path).expanduser()
  if is_converted_checkpoint(path):
    return "sha256:" + _sha256(path / CONFIG_FILE)
  if path.is_file():
    return "sha256:" + _sha256(path)
  if path.is_dir():
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
      digest.update(file.relative_to(path).as_posix().encode() + b"\0" + _sha256(file).encode())
    return "sha256:" + digest.hexdigest()
  raise FileNotFoundError(f"{path}: no such checkpoint file or folder")


def params_digest(params: Any) -> str:
  """SHA-256 (hex) of a parameter tree's content: every leaf's path, dtype, shape and bytes, in path order. Equal
  trees give equal digests whatever their container types (nested dicts, NumPy or JAX arrays)."""
  digest = hashlib.sha256()
  for name, leaf in sorted(flatten_params(params).items()):
    value = np.ascontiguousarray(np.asarray(leaf))
    digest.update(f"{name}\0{value.dtype.str}\0{value.shape}\0".encode())
    digest.update(value.reshape(-1).view(np.uint8))  # no copy of the array
  return digest.hexdigest()


def _file_digests(directory: pathlib.Path, under: str) -> dict[str, dict[str, Any]]:
  """{path relative to `directory`: {"size", "sha256"}} of every file below `directory / under`."""
  return {path.relative_to(directory).as_posix(): {"size": path.stat().st_size, "sha256": _sha256(path)}
          for path in sorted((directory / under).rglob("*")) if path.is_file()}


def save_converted(directory: str | os.PathLike, params: Any, model: str, config: dict[str, Any]) -> pathlib.Path:
  """Writes `params` (Orbax), `{"model": model, "config": config, "files": ...}` (JSON) into `directory`.

  Every parameter must be finite (a `CheckpointError` names the others). The folder is written under a
  temporary name beside `directory` and renamed into place: an existing converted checkpoint there is
  replaced, any other non-empty folder is refused. Returns the absolute directory path.
  """
  import orbax.checkpoint as ocp  # Imported lazily: heavy, and only needed for saving/restoring.

  directory = pathlib.Path(directory).expanduser().absolute()  # Orbax refuses relative paths.
  params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params)
  non_finite = [k for k, v in flatten_params(params).items() if not np.isfinite(v).all()]
  if non_finite:
    raise CheckpointError(str(directory), problems=[
        f"refusing to write {len(non_finite)} parameter(s) holding NaN or inf values: {', '.join(non_finite)}"])
  if directory.exists() and not directory.is_dir():
    raise FileExistsError(f"{directory} exists and is not a folder")
  if directory.is_dir():
    others = sorted(p.name for p in directory.iterdir() if p.name not in (CONFIG_FILE, PARAMS_DIR))
    if others:
      raise FileExistsError(f"{directory} exists and holds other files than a converted checkpoint "
                            f"({', '.join(others[:5])}); refusing to replace it")
  temp = pathlib.Path(atomic.staging_dir(str(directory)))
  try:
    try:
      with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(temp / PARAMS_DIR, params)
    except Exception as e:  # noqa: BLE001  Orbax and TensorStore raise many kinds (a full disk, say)
      errors.quiet_late_callbacks()
      raise OSError(f"cannot write {directory} ({errors.reason(e)}); it is left as it was") from e
    meta = {"model": model, "config": config, FILES_KEY: _file_digests(temp, PARAMS_DIR)}
    atomic.write_text(str(temp / CONFIG_FILE), json.dumps(meta, indent=2) + "\n")
    atomic.publish_dir(str(temp), str(directory))
  finally:
    shutil.rmtree(temp, ignore_errors=True)
  return directory


def is_converted_checkpoint(path: str | os.PathLike) -> bool:
  """True if `path` is a directory written by `save_converted` (both parts present)."""
  path = pathlib.Path(path)
  return (path / CONFIG_FILE).is_file() and (path / PARAMS_DIR).is_dir()


def _read_meta(path: pathlib.Path) -> Any:
  try:
    return json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError):
    return None


def looks_converted(path: str | os.PathLike) -> bool:
  """True if `path` is a folder with a `params/` or a `save_converted`-style `config.json`: a converted
  checkpoint, possibly incomplete or damaged (`restore_converted` then says what is wrong)."""
  path = pathlib.Path(path)
  if not path.is_dir():
    return False
  meta = _read_meta(path / CONFIG_FILE) if (path / CONFIG_FILE).is_file() else None
  return (path / PARAMS_DIR).exists() or (isinstance(meta, dict) and "model" in meta and "config" in meta)


def _verify_files(directory: pathlib.Path, files: dict[str, Any]) -> None:
  """Raises DamagedCheckpointError naming the files that are missing or differ from their digest."""
  problems = []
  for name, want in files.items():
    path = directory / name
    if not path.is_file():
      problems.append(f"{name} is missing")
    elif path.stat().st_size != want["size"]:
      problems.append(f"{name} has {path.stat().st_size} bytes, {want['size']} were written")
    elif _sha256(path) != want["sha256"]:
      problems.append(f"{name} differs from what was written (SHA-256)")
  if problems:
    more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
    raise DamagedCheckpointError(str(directory), f"damaged: {'; '.join(problems[:3])}{more}", "convert it again")


def restore_converted(directory: str | os.PathLike, model: str) -> tuple[dict[str, Any], Any]:
  """Reads a `save_converted` directory: returns `(config dict, params as NumPy arrays)`.

  The files are checked against the sizes and SHA-256 digests in `config.json` first (folders converted
  before digests existed are read with a warning). Raises `CheckpointError` if it was written for another
  model, `DamagedCheckpointError` (one line naming the folder and the problem) if it is incomplete or damaged.
  """
  import orbax.checkpoint as ocp

  directory = pathlib.Path(directory).expanduser().absolute()
  absent = [name for name in (CONFIG_FILE, f"{PARAMS_DIR}/") if not (directory / name.rstrip("/")).exists()]
  if absent:
    raise DamagedCheckpointError(str(directory), f"expected {CONFIG_FILE} and {PARAMS_DIR}/ inside (a folder "
                                 f"written by weights_conversion); missing: {', '.join(absent)}")
  meta = _read_meta(directory / CONFIG_FILE)
  if not isinstance(meta, dict) or "config" not in meta:
    raise DamagedCheckpointError(str(directory), f"{CONFIG_FILE} is not the JSON a converter writes")
  if meta.get("model") != model:
    raise CheckpointError(str(directory), problems=[f"holds a {meta.get('model')!r} model, expected {model!r}"])
  if FILES_KEY in meta:
    _verify_files(directory, meta[FILES_KEY])
  else:
    logging.warning("%s was converted without file digests (an older asd_jax): it cannot be checked for "
                    "damage; convert it again to have it checked", directory)
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      params = checkpointer.restore(directory / PARAMS_DIR)
  except Exception as e:  # noqa: BLE001  Orbax and TensorStore raise many kinds (a bare Exception, too)
    errors.quiet_late_callbacks()
    raise DamagedCheckpointError(str(directory), f"Orbax cannot read {PARAMS_DIR}/ ({errors.reason(e)})") from e
  params = jax.tree_util.tree_map(np.asarray, params)
  return meta["config"], params
