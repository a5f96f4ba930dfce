"""Shared pytest setup: two emulated CPU devices, parsed absl flags, the fixtures folder, upstream clones."""

import os
import pathlib
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402
from absl import flags  # noqa: E402

# grain's multi-worker paths read absl flags; tests never call app.run.
flags.FLAGS.mark_as_parsed()

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def fixtures_dir() -> pathlib.Path:
  """The reference fixtures (tests/fixtures/README.md): $ASD_JAX_FIXTURES, else tests/fixtures in this checkout."""
  return pathlib.Path(os.environ.get("ASD_JAX_FIXTURES", REPO_ROOT / "tests" / "fixtures"))


@pytest.fixture(scope="session")
def fixtures() -> pathlib.Path:
  path = fixtures_dir()
  if not (path / "manifest.json").exists():
    pytest.fail(f"reference fixtures not found at {path} (set ASD_JAX_FIXTURES)")
  return path


@pytest.fixture
def upstream_eat_dir():
  """$ASD_JAX_UPSTREAM_EAT (a clone of upstream EAT) or a skip; upstream's modules are unloaded afterwards."""
  from benchmarks import upstream_eat  # pylint: disable=import-outside-toplevel
  path = os.environ.get("ASD_JAX_UPSTREAM_EAT")
  if not path:
    pytest.skip("set ASD_JAX_UPSTREAM_EAT to a clone of github.com/cwx-worst-one/EAT")
  before = set(sys.modules)
  yield path
  for name in set(sys.modules) - before:  # the stand-ins and upstream's modules stay out of other tests
    if name.split(".")[0] in upstream_eat.STAND_IN_PACKAGES + (upstream_eat.PACKAGE,):
      del sys.modules[name]


@pytest.fixture
def upstream_beats_dir():
  """$ASD_JAX_UPSTREAM_BEATS (the beats/ folder of a clone of microsoft/unilm) or a skip; upstream's modules
  (and a torchaudio stand-in) are unloaded afterwards."""
  from benchmarks import upstream_beats  # pylint: disable=import-outside-toplevel
  path = os.environ.get("ASD_JAX_UPSTREAM_BEATS")
  if not path:
    pytest.skip("set ASD_JAX_UPSTREAM_BEATS to the beats/ folder of a clone of github.com/microsoft/unilm")
  before = set(sys.modules)
  yield path
  for name in set(sys.modules) - before:
    if name in upstream_beats.MODULES:
      del sys.modules[name]


@pytest.fixture
def torchaudio_source():
  """$ASD_JAX_TORCHAUDIO (a torchaudio 2.11.0 wheel, an unpacked one, or its compliance/kaldi.py) or a skip."""
  path = os.environ.get("ASD_JAX_TORCHAUDIO")
  if not path:
    pytest.skip("set ASD_JAX_TORCHAUDIO to a torchaudio 2.11.0 wheel (pip download --no-deps torchaudio==2.11.0)")
  return path


@pytest.fixture(scope="module")
def compile_once(tmp_path_factory):
  """XLA's persistent compilation cache for one test module whose runs compile the same step: it is compiled
  once. A module uses it with `pytestmark = pytest.mark.usefixtures("compile_once")`."""
  import jax  # pylint: disable=import-outside-toplevel
  from jax.experimental.compilation_cache import compilation_cache  # pylint: disable=import-outside-toplevel

  compilation_cache.reset_cache()
  compilation_cache.set_cache_dir(str(tmp_path_factory.mktemp("xla_cache")))
  yield
  jax.config.update("jax_compilation_cache_dir", None)
  compilation_cache.reset_cache()
