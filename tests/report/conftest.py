"""Shared by the report tests: a PNG check, and one tiny pipeline run with its report written by the CLI.

The run (`report_run`) is one tiny BEATs (1 epoch) and its concatenation model on two machine types, the
smallest run that has fused systems, several sections, SMOTE samples and a training log. Under pytest-xdist
the workers of one test session share it: the first builds it under a file lock, the others wait and load its
pickled result (xdist's `--dist loadgroup` would do this, but its groups are lost under pytest 9).
"""

import fcntl
import io
import os
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png(data: bytes, what: str = "figure") -> np.ndarray:
  """Asserts `data` is a PNG that decodes to a non-blank image; returns the pixels [h, w, channels]."""
  from matplotlib import image as mpimg

  assert data[:8] == PNG_SIGNATURE, f"{what}: not a PNG (starts with {data[:8]!r})"
  pixels = mpimg.imread(io.BytesIO(data), format="png")
  assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50, f"{what}: shape {pixels.shape}"
  assert np.ptp(pixels[..., :3]) > 0.5, f"{what}: a blank image"
  return pixels


@pytest.fixture(name="check_png")
def check_png_fixture():
  return check_png


def run_module(*args: str, **kwargs) -> subprocess.CompletedProcess:
  """`python -m <args>` from the repository root, output captured."""
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, **kwargs)


@pytest.fixture(name="run_module")
def run_module_fixture():
  return run_module


def _build_run(base: pathlib.Path):
  from asd_jax import pipeline
  from asd_jax.data import synth
  from configs import demo_pipeline

  synth.generate(base / "data", scale=0.01, duration=2.0, machines=("fan", "valve"))
  config = demo_pipeline.get_config()
  config.data.root = str(base / "data")
  config.model_keys = "fbeats,fusion"
  config.pretrain = None  # the demo's pre-training stage is tested in tests/pretraining
  config.init.random_weights = "beats,eat"
  config.models.fusion.sources = "fbeats"
  t = config.models.fbeats.fine_tune
  t.train.epochs = 1
  t.train.batch_size = 4
  t.train.log_every = 1  # a few rows in metrics.jsonl, so there are curves
  t.optim.learning_rate = 1e-12  # a model that cannot learn: the pipeline warns that it ended near chance
  t.embed.batch_size = 8
  workdir = base / "work"
  result = pipeline.run(config, str(workdir), progress=False)
  proc = run_module("asd_jax.report", f"--workdir={workdir}", "--max_points=30")
  assert proc.returncode == 0, proc.stderr
  return config, workdir, result, proc.stdout


@pytest.fixture(scope="session")
def report_run(tmp_path_factory):
  """(pipeline config, workdir, `pipeline.PipelineResult`, the report CLI's output) of the tiny run."""
  if os.environ.get("PYTEST_XDIST_WORKER") is None:
    return _build_run(tmp_path_factory.mktemp("report"))
  shared = tmp_path_factory.getbasetemp().parent / "report_run"  # this session's folder, common to its workers
  shared.mkdir(exist_ok=True)
  done = shared / "run.pkl"
  with open(shared / "lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker builds; the others wait here
    if not done.exists():
      run = _build_run(shared)
      tmp = shared / "run.pkl.tmp"
      tmp.write_bytes(pickle.dumps(run))
      tmp.rename(done)
      return run
  return pickle.loads(done.read_bytes())
