"""Every config file in configs/ loads through `--config` as the CLIs read it, the training configs dry-run,
and the configs are locked: a misspelt field, on the command line or inside a config file, is an error.

Config files are found by glob, so a new file is tested without editing this module. A file whose
`get_config` takes an argument (`--config=configs/systems.py:system2`) must be listed in `NAMED` with the
names it accepts.
"""

import contextlib
import importlib.util

import inspect
import io
import pathlib

import pytest
from absl import flags
from ml_collections import config_flags

from asd_jax import config_checks
from asd_jax.finetuning import fine_tune

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
CONFIG_FILES = sorted(p for p in CONFIG_DIR.glob("*.py") if p.name != "__init__.py")
# Config files with several named configs: file name -> the names after ':' in the config string.
NAMED = {"systems.py": ("system1", "system2", "system3", "system4"),
         "pipeline_base.py": ("system1", "system4"),
         # Pre-training configs take their data sources after ':' (kind:path, comma-separated).
         "pretrain_eat_base.py": ("dcase:/data/dcase_dev,folder:/data/audioset",),
         "pretrain_eat_large.py": ("glob:/data/**/*.wav",),
         "pretrain_demo.py": ("dcase:work/synth_dcase",)}


def _config_strings():
  strings = []
  for path in CONFIG_FILES:
    strings.append(str(path))
    strings += [f"{path}:{name}" for name in NAMED.get(path.name, ())]
  return strings


def _load(config_string, *overrides):
  """The config as `--config=<config_string> [--config.x=y ...]` gives it to a CLI."""
  argv = ["prog", f"--config={config_string}", *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config file", flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def _is_training_config(config):
  return all(field in config for field in ("data", "model", "lora", "optim", "train"))


def test_config_files_are_found():
  names = {p.name for p in CONFIG_FILES}
  assert {"common.py", "demo.py", "demo_dual.py", "dual_branch.py", "fbeats.py", "feat.py", "lbeats.py",
          "leat.py", "systems.py"} <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_named_configs_are_listed(path):
  """A `get_config` with parameters needs its names in NAMED, or its named configs would go untested."""
  spec = importlib.util.spec_from_file_location(f"_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert callable(getattr(module, "get_config", None)), f"{path} has no get_config()"
  if inspect.signature(module.get_config).parameters:
    assert path.name in NAMED, f"{path}: get_config takes arguments; list its config names in NAMED"


@pytest.mark.parametrize("config_string", _config_strings(), ids=lambda s: s.rsplit("/", 1)[-1])
def test_config_loads_and_training_configs_dry_run(config_string, tmp_path):
  config = _load(config_string)
  assert config.is_locked, f"{config_string}: get_config() must return a locked config"
  if not _is_training_config(config):
    return
  needs = {k: v for k, v in config.model.items() if k.endswith("checkpoint") and v}
  if needs:
    pytest.skip(f"needs checkpoint files {needs}")
  config.data.root = str(tmp_path / "absent")  # heads sized for one class; never a dataset lying around
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert fine_tune.train(config, str(tmp_path / "work"), dry_run=True) is None
  total = next(line for line in out.getvalue().splitlines() if line.startswith("total"))
  assert int(total.split()[-1].replace(",", "")) > 0  # something is trainable
  assert not (tmp_path / "work").exists()


def test_misspelt_override_on_the_command_line_is_refused():
  with pytest.raises(AttributeError, match='Did you mean "epochs" instead of "epoch"'):
    _load(str(CONFIG_DIR / "demo.py"), "--config.train.epoch=2")
  assert _load(str(CONFIG_DIR / "demo.py"), "--config.train.epochs=2").train.epochs == 2


def test_misspelt_field_in_a_config_file_is_refused(tmp_path):
  path = tmp_path / "typo.py"
  path.write_text("from configs import demo\n\n\ndef get_config():\n  c = demo.get_config()\n"
                  "  c.train.epoch = 2\n  return c\n")
  with pytest.raises(AttributeError, match='Did you mean "epochs" instead of "epoch"'):
    _load(str(path))


def test_derived_configs_stay_locked_after_adding_fields():
  config = _load(str(CONFIG_DIR / "dual_branch.py"))
  assert config.model.is_locked and config.loss.is_locked
  with pytest.raises(AttributeError, match="num_subcluster"):
    config.loss.num_subcluster = 4


@pytest.mark.parametrize("config_string", _config_strings(), ids=lambda s: s.rsplit("/", 1)[-1])
def test_every_config_passes_the_value_checks(config_string):
  config_checks.check(_load(config_string))


@pytest.mark.parametrize("name,encoder,decoder", [("pretrain_eat_base", 89_972_736, 2_585_856),
                                                  ("pretrain_eat_large", 308_867_072, 5_967_872),
                                                  ("pretrain_demo", 509_824, 18_368)])
def test_pretraining_configs_dry_run_with_the_released_sizes(name, encoder, decoder, tmp_path):
  """Parameter counts of student and decoder equal the released checkpoints' (fixtures eat_*_keys.json)."""
  import json

  from asd_jax.pretraining import pretrain
  from tests.conftest import fixtures_dir

  config = _load(str(CONFIG_DIR / f"{name}.py"))
  if name != "pretrain_demo":
    counts = json.loads((fixtures_dir() / f"eat_{name.rsplit('_', 1)[-1]}_keys.json").read_text())["counts"]
    assert (counts["encoder_params_incl_positions"], counts["decoder_params"]) == (encoder, decoder)
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert pretrain.pretrain(config, str(tmp_path / "work"), dry_run=True) is None
  rows = {line.split()[0]: tuple(int(n.replace(",", "")) for n in line.split()[1:])
          for line in out.getvalue().splitlines()[2:6]}  # under the sizes line and the table's header
  student = rows.pop("student")
  assert student[0] == encoder and 0 < student[1] < encoder  # the position table is never trained
  assert rows == {"extra/teacher": (encoder, 0), "decoder": (decoder, decoder), "total": (2 * encoder + decoder,
                                                                                           student[1] + decoder)}
  assert not (tmp_path / "work").exists()
