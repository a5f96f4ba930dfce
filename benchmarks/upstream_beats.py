"""Imports upstream BEATs (the `beats/` folder of a user's clone of microsoft/unilm) and torchaudio's Kaldi fbank.

Upstream's `BEATs.py` imports `torchaudio.compliance.kaldi` for its front end (`preprocess`). torchaudio has no
wheel beside the torch this project pins, so:
- `import_upstream_beats(path)` registers an empty stand-in `torchaudio` when the real one is absent (enough
  for comparisons that start from the fbank, such as `benchmarks/side_by_side.py`);
- `load_kaldi(source)` loads `torchaudio/compliance/kaldi.py` on its own, from a torchaudio wheel (`.whl`, read
  in place), an unpacked wheel or site-packages folder, or the `kaldi.py` file itself. That file is plain
  PyTorch; its one `import torchaudio` serves only `mfcc` (`torchaudio.functional.create_dct`), which fbank never
  calls, so a stand-in package is registered while it loads. `use_kaldi(upstream, kaldi)` points upstream's
  `preprocess` at it, so that upstream's own front end runs (`benchmarks/make_reference_fixtures.py`).
"""

from __future__ import annotations

import hashlib
import pathlib
import sys
import types
import zipfile

KALDI_IN_WHEEL = "torchaudio/compliance/kaldi.py"
MODULES = ("BEATs", "backbone", "modules", "quantizer", "torchaudio", "torchaudio.compliance",
           "torchaudio.compliance.kaldi")  # what importing upstream may add to sys.modules


def _torchaudio_stand_in() -> dict[str, types.ModuleType]:
  package = types.ModuleType("torchaudio")
  package.compliance = types.ModuleType("torchaudio.compliance")
  package.compliance.kaldi = types.ModuleType("torchaudio.compliance.kaldi")
  return {"torchaudio": package, "torchaudio.compliance": package.compliance,
          "torchaudio.compliance.kaldi": package.compliance.kaldi}


def import_upstream_beats(path: str | pathlib.Path) -> types.ModuleType:
  """Imports upstream `BEATs.py` from `path` (a folder), without torchaudio if it is absent."""
  path = pathlib.Path(path).expanduser().resolve()
  for name in ("BEATs.py", "backbone.py"):
    if not (path / name).is_file():
      raise FileNotFoundError(f"--upstream_beats={path}: expected upstream's {name} there (the beats/ folder of "
                              "a clone of github.com/microsoft/unilm)")
  try:
    import torchaudio  # noqa: F401
  except ImportError:
    sys.modules.update(_torchaudio_stand_in())
  sys.path.insert(0, str(path))
  try:
    import BEATs as upstream  # noqa: N813  (upstream's module name)
  finally:
    sys.path.remove(str(path))
  if pathlib.Path(upstream.__file__).resolve().parent != path:
    raise RuntimeError(f"upstream BEATs was already imported from {upstream.__file__}, not from {path}")
  return upstream


def kaldi_source(source: str | pathlib.Path) -> tuple[str, str]:
  """(text of torchaudio's `compliance/kaldi.py`, where it was read) from a wheel, a folder or the file."""
  source = pathlib.Path(source).expanduser().resolve()
  if source.is_file() and source.suffix == ".whl":
    with zipfile.ZipFile(source) as wheel:
      if KALDI_IN_WHEEL not in wheel.namelist():
        raise FileNotFoundError(f"--torchaudio={source}: the wheel holds no {KALDI_IN_WHEEL}")
      return wheel.read(KALDI_IN_WHEEL).decode("utf-8"), f"{source}!{KALDI_IN_WHEEL}"
  file = source / KALDI_IN_WHEEL if source.is_dir() else source
  if not file.is_file():
    raise FileNotFoundError(f"--torchaudio={source}: expected a torchaudio wheel (.whl), a folder holding "
                            f"{KALDI_IN_WHEEL} (an unpacked wheel or site-packages), or that kaldi.py itself")
  return file.read_text(encoding="utf-8"), str(file)


def load_kaldi(source: str | pathlib.Path) -> types.ModuleType:
  """torchaudio's `compliance/kaldi.py` as a module of its own (see the module docstring); `sha256` is set."""
  text, origin = kaldi_source(source)
  module = types.ModuleType("torchaudio.compliance.kaldi")
  module.__file__ = origin
  module.sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
  added = {name: m for name, m in _torchaudio_stand_in().items() if name not in sys.modules}
  sys.modules.update(added)  # `import torchaudio` at its top; only mfcc would use it
  try:
    exec(compile(text, origin, "exec"), module.__dict__)  # noqa: S102  (the user's own torchaudio file)
  finally:
    for name in added:
      del sys.modules[name]
  return module


def use_kaldi(upstream: types.ModuleType, kaldi: types.ModuleType) -> None:
  """Makes upstream's `preprocess` call `kaldi.fbank` (from `load_kaldi`)."""
  upstream.ta_kaldi = kaldi
