"""kill -9 in the middle of a write that a later run reads: the re-run succeeds and reuses nothing half-written.

Each case runs `tests/kill_worker.py` in a subprocess that sends itself SIGKILL at the worst moment (no Python
cleanup runs: no `finally`, no atexit), then repeats the job here.
"""

import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

from asd_jax.data import layout
from asd_jax.data import synth
from asd_jax.detector import detector as detector_lib
from asd_jax.embedding import store
from asd_jax.pipeline import cache
from tests import kill_worker

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("kill")
  synth.generate(root / "data", scale=0.01, seed=3, machines=["fan"], duration=kill_worker.CLIP_S)
  return root


def _killed(mode: str, dataset: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  """A fresh run folder (the dataset linked in as data/) in which `mode` was killed; returns it."""
  root = tmp_path / "run"
  root.mkdir()
  os.symlink(dataset / "data", root / "data")
  env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu"}
  done = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "kill_worker.py"), mode, str(root)],
                        env=env, capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
  return root


def test_a_detector_export_killed_between_its_renames_is_recovered_and_a_rerun_succeeds(dataset, tmp_path):
  root = _killed("export", dataset, tmp_path)
  target = root / "detector"
  assert not target.exists()  # the kill came after the old folder was moved aside
  detector = detector_lib.Detector(str(target))  # a reader puts the old, complete folder back
  assert detector.system == "log-mel"
  clip = [r for r in layout.scan_dataset(root / "data") if r.split == "test"][0]
  first = detector.score([clip.path], [clip.machine], [clip.section])
  kill_worker.export_detector(str(root))  # the re-run replaces it and leaves no staging or retired folder
  assert sorted(p.name for p in root.iterdir()) == ["data", "detector"]
  again = detector_lib.Detector(str(target)).score([clip.path], [clip.machine], [clip.section])
  np.testing.assert_array_equal(first[0].score, again[0].score)  # same data, same model: the same detector


def test_embedding_killed_while_writing_is_redone_not_reused(dataset, tmp_path):
  root = _killed("embed", dataset, tmp_path)
  model_dir = root / "model"
  assert not (model_dir / store.ARRAYS).exists()  # only the hidden temporary holds the half-written bytes
  assert [p.name for p in model_dir.iterdir() if p.name.startswith(f".{store.ARRAYS}.tmp-")]
  spec = kill_worker.log_mel_spec(str(root / "data"))
  assert cache.ensure_embedded(spec, str(model_dir), "clips", progress=False) == "ran"
  assert not [p for p in model_dir.iterdir() if ".tmp-" in p.name]  # the re-run's write removed the killed one's
  assert cache.ensure_embedded(spec, str(model_dir), "clips", progress=False) == "cached"
  clean = tmp_path / "clean"
  cache.ensure_embedded(spec, str(clean), "clips", progress=False)
  records = layout.scan_dataset(root / "data")
  for key, value in store.read(str(clean / store.ARRAYS), records).items():
    np.testing.assert_array_equal(store.read(str(model_dir / store.ARRAYS), records)[key], value)
