"""Model-agnostic checkpoint plumbing: reading PyTorch `.pt` files safely, strict key checking, and
saving/restoring converted Flax parameters.

Each encoder module (beats.py, eat.py) owns its key mapping; this module owns what they share:
`load_torch_checkpoint` (always `weights_only=True`, never arbitrary unpickling), `check_state_dict`
(refuses missing, unexpected or mis-shaped tensors with one message listing all of them), and a converted
checkpoint format: a directory holding `params/` (an Orbax `StandardCheckpointer` tree of float32 arrays)
and `config.json` (`{"model": name, "config": {...}}`).
"""

from __future__ import annotations

import collections.abc
import json
import os
import pathlib
from typing import Any

import jax
import numpy as np

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"


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


def load_torch_checkpoint(path: str | os.PathLike, *, safe_globals: collections.abc.Sequence[Any] = ()
                          ) -> dict[str, Any]:
  """Reads a PyTorch checkpoint with `torch.load(weights_only=True)` on CPU.

  `safe_globals` are extra classes allowed in the pickle (e.g. `argparse.Namespace` in a config); there is
  no fallback to unrestricted unpickling. Raises `CheckpointError` naming the file if it can't be read.
  """
  import torch  # Imported lazily: only conversion needs PyTorch.

  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"checkpoint {path} does not exist")
  try:
    with torch.serialization.safe_globals(list(safe_globals)):
      checkpoint = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises pickle.UnpicklingError, RuntimeError, ... depending on the file.
    raise CheckpointError(str(path), problems=[f"torch.load(weights_only=True) failed: {e}"]) from e
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


def check_state_dict(state_dict: collections.abc.Mapping[str, Any],
                     expected_shapes: collections.abc.Mapping[str, tuple[int, ...]], *, source: str,
                     ignore: collections.abc.Container[str] = ()) -> None:
  """Raises `CheckpointError` unless `state_dict` (key -> tensor/array) has exactly the keys and shapes of
  `expected_shapes` (key -> shape tuple).

  Keys in `ignore` may be present or absent (e.g. training-only tensors a converter drops on purpose).
  """
  found = {k for k in state_dict if k not in ignore}
  wanted = set(expected_shapes)
  misshaped = [(k, tuple(expected_shapes[k]), _shape(state_dict[k]))
               for k in sorted(found & wanted) if _shape(state_dict[k]) != tuple(expected_shapes[k])]
  if wanted - found or found - wanted or misshaped:
    raise CheckpointError(source, missing=wanted - found, unexpected=found - wanted, misshaped=misshaped)


def flatten_params(params: Any) -> dict[str, np.ndarray]:
  """`{'a/b/kernel': array}` view of a nested parameter dict (paths joined with '/')."""
  return {"/".join(str(getattr(k, "key", k)) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def count_params(params: Any) -> int:
  """Number of scalars in a parameter tree (works on `jax.ShapeDtypeStruct` leaves too)."""
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))


def save_converted(directory: str | os.PathLike, params: Any, model: str, config: dict[str, Any]) -> pathlib.Path:
  """Writes `params` (Orbax) and `{"model": model, "config": config}` (JSON) into `directory`.

  The directory is created (its parents too) and overwritten if it already holds a converted checkpoint.
  Returns the absolute directory path.
  """
  import orbax.checkpoint as ocp  # Imported lazily: heavy, and only needed for saving/restoring.

  directory = pathlib.Path(directory).expanduser().absolute()  # Orbax refuses relative paths.
  directory.mkdir(parents=True, exist_ok=True)
  params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory / PARAMS_DIR, params, force=True)
  (directory / CONFIG_FILE).write_text(json.dumps({"model": model, "config": config}, indent=2) + "\n")
  return directory


def is_converted_checkpoint(path: str | os.PathLike) -> bool:
  """True if `path` is a directory written by `save_converted`."""
  path = pathlib.Path(path)
  return (path / CONFIG_FILE).is_file() and (path / PARAMS_DIR).is_dir()


def restore_converted(directory: str | os.PathLike, model: str) -> tuple[dict[str, Any], Any]:
  """Reads a `save_converted` directory: returns `(config dict, params as NumPy arrays)`.

  Raises `CheckpointError` if it is not a converted checkpoint or was written for another model.
  """
  import orbax.checkpoint as ocp

  directory = pathlib.Path(directory).expanduser().absolute()
  if not is_converted_checkpoint(directory):
    raise CheckpointError(str(directory), problems=[f"expected {CONFIG_FILE} and {PARAMS_DIR}/ inside"])
  meta = json.loads((directory / CONFIG_FILE).read_text())
  if meta.get("model") != model:
    raise CheckpointError(str(directory), problems=[f"holds a {meta.get('model')!r} model, expected {model!r}"])
  with ocp.StandardCheckpointer() as checkpointer:
    params = checkpointer.restore(directory / PARAMS_DIR)
  params = jax.tree_util.tree_map(np.asarray, params)
  return meta["config"], params
