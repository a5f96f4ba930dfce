"""What every model of a pipeline starts from and runs with: no encoder starts from random weights unless the config
asks for it, the run says which weights each encoder started from (its first lines and provenance.json), and
`train_all` sets epochs, batch size, clip length and dtype of every model at once without overriding a per-model
setting.
"""

import hashlib
import json
import os
import pathlib

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from asd_jax import pipeline
from asd_jax.data import synth
from asd_jax.pipeline import specs as specs_lib
from asd_jax.pipeline import stages
from configs import demo_pipeline, pipeline_base, system1

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PIPELINE_CONFIGS = ("configs/system1.py", "configs/system2.py", "configs/system3.py", "configs/system4.py",
                    "configs/demo_pipeline.py")


def parse(*args):
  """The config as `python -m asd_jax.pipeline` would parse these flags (ml_collections' config_flags)."""
  values = flags.FlagValues()
  argv = ["pipeline", *args]
  config_flags.DEFINE_config_file("config", None, "pipeline config", flag_values=values, sys_argv=argv)
  values(argv)
  return values.config


def model_configs(config):
  """{key: (the model's fine-tuning or network config, whether it is fine-tuned)}."""
  return {k: (e.fine_tune if e.fine_tune is not None else e.frozen, e.fine_tune is not None)
          for k, e in config.models.items() if (e.fine_tune if e.fine_tune is not None else e.frozen) is not None}


# --- Random weights only when asked for ----------------------------------------------------------------------


def test_the_report_s_systems_refuse_to_start_without_encoder_checkpoints(tmp_path, monkeypatch):
  def stop(*args, **kwargs):
    raise AssertionError("the dataset was read: the check must come first")

  monkeypatch.setattr(stages.layout, "scan_dataset", stop)
  config = system1.get_config()
  config.data.root = str(REPO_ROOT / "tests" / "real" / "dcase2023_dev")
  with pytest.raises(ValueError) as error:
    pipeline.run(config, str(tmp_path / "work"), progress=False)
  lines = str(error.value).splitlines()
  assert lines[0].startswith("no checkpoint for beats (config.init.beats is empty), so FBEATs, LBEATs, Dual-Branch, "
                             "BEATs (frozen) would start from random weights: pass the converted checkpoint, "
                             "--config.init.beats=/abs/ckpt/beats")
  assert lines[1].startswith("no checkpoint for eat (config.init.eat is empty), so FEAT, LEAT, Dual-Branch, "
                             "EAT (frozen) would start from random weights")
  assert lines[0].endswith("--config.init.random_weights=beats,eat")
  assert not os.path.exists(tmp_path / "work" / "models")


def test_random_weights_asked_for_by_name_and_the_random_init_rows_are_allowed():
  config = pipeline_base.get_config()
  config.data.root = "/data"
  config.init.eat = "/abs/ckpt/eat"
  config.init.random_weights = "beats"
  config.model_keys = "fbeats,feat,dual_branch,feat_random,log_mel"
  starts = specs_lib.starting_weights(config, specs_lib.model_specs(config))
  got = {(s.key, s.encoder): (s.source, s.path, s.why) for s in starts}
  assert got == {
      ("fbeats", "beats"): ("random", "", "init.random_weights=beats"),
      ("feat", "eat"): ("checkpoint", "/abs/ckpt/eat", ""),
      ("dual_branch", "beats"): ("random", "", "init.random_weights=beats"),
      ("dual_branch", "eat"): ("checkpoint", "/abs/ckpt/eat", ""),
      # A reference row that keeps its own (empty) encoder field is random by its own config.
      ("feat_random", "eat"): ("random", "", "models.feat_random.init=False: the model keeps its own empty "
                                              "model.init_checkpoint"),
  }  # log_mel has no encoder
  config.init.random_weights = "beats,eta"
  with pytest.raises(ValueError, match=r"config.init.random_weights='beats,eta' names \['eta'\]; expected encoder "
                     r"names among \['beats', 'eat'\]"):
    specs_lib.starting_weights(config, specs_lib.model_specs(config))


def test_the_demo_states_its_choice_random_beats_and_pre_trained_eat():
  config = demo_pipeline.get_config()
  assert config.init.random_weights == "beats"
  planned = ml_collections.ConfigDict(config.to_dict())
  planned.init.eat = "/w/pretrain/encoder"
  starts = specs_lib.starting_weights(planned, specs_lib.model_specs(planned), pretrained_eat="/w/pretrain/encoder")
  by_model = {}
  for s in starts:
    by_model.setdefault(s.key, {})[s.encoder] = s.source
  assert by_model["fbeats"] == {"beats": "random"} and by_model["feat"] == {"eat": "pre-training"}
  assert by_model["dual_branch"] == {"beats": "random", "eat": "pre-training"}
  assert by_model["feat_random"] == {"eat": "random"} and by_model["frozen_eat"] == {"eat": "pre-training"}


def test_a_checkpoint_is_named_with_its_digest_in_the_first_lines_and_in_provenance(tmp_path, capsys):
  """The released-format tiny BEATs fixture as `init.beats` of the frozen BEATs row: no training, one embedding."""
  checkpoint = REPO_ROOT / "tests" / "fixtures" / "beats_tiny.pt"
  digest = "sha256:" + hashlib.sha256(checkpoint.read_bytes()).hexdigest()
  synth.generate(tmp_path / "data", scale=0.01, duration=1.0, machines=("fan",))
  config = pipeline_base.get_config()
  config.data.root = str(tmp_path / "data")
  config.init.beats = str(checkpoint)
  config.model_keys = "frozen_beats,log_mel"
  config.train_all.clip_seconds = 1.0
  config.export = False
  pipeline.run(config, str(tmp_path / "work"), progress=True)
  out = capsys.readouterr().out.splitlines()
  weights = [line for line in out if "] weights " in line]
  assert out.index(weights[0]) == 1  # right after the line naming the models and the dataset
  assert weights == [line for line in out[1:2]]
  assert weights[0].endswith(f"weights BEATs (frozen): BEATs from checkpoint {checkpoint} ({digest})")
  provenance = json.loads((tmp_path / "work" / "provenance.json").read_text())
  assert provenance["weights"] == {"frozen_beats": {"beats": {"source": "checkpoint", "path": str(checkpoint),
                                                              "sha256": digest}}}


def test_a_checkpoint_that_is_not_there_is_an_error_before_any_compute(tmp_path):
  config = pipeline_base.get_config()
  config.data.root = str(tmp_path / "data")
  config.init.beats = str(tmp_path / "nowhere" / "beats")
  config.model_keys = "frozen_beats"
  with pytest.raises(ValueError, match=f"model frozen_beats .BEATs .frozen..: its beats checkpoint "
                     rf"{tmp_path}/nowhere/beats: no such checkpoint file or folder \(config.init.beats\)"):
    pipeline.run(config, str(tmp_path / "work"), progress=False)


def test_a_missing_checkpoint_of_a_model_s_own_field_names_that_field(tmp_path):
  """The model's own `init_checkpoint` wins over `init.eat`, so the error names the model's field, not init.eat."""
  config = pipeline_base.get_config()
  config.data.root = str(tmp_path / "data")
  config.init.eat = str(REPO_ROOT / "tests" / "fixtures" / "eat_tiny.pt")
  config.models.feat.fine_tune.model.init_checkpoint = str(tmp_path / "gone" / "eat")
  config.model_keys = "feat"
  with pytest.raises(ValueError, match=rf"model feat .FEAT.: its eat checkpoint {tmp_path}/gone/eat: no such "
                     r"checkpoint file or folder \(config.models.feat.fine_tune.model.init_checkpoint\)"):
    pipeline.run(config, str(tmp_path / "work"), progress=False)


# --- train_all ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PIPELINE_CONFIGS)
def test_train_all_sets_every_model_of_every_pipeline_config(path):
  config = parse(f"--config={REPO_ROOT / path}", "--config.train_all.epochs=1", "--config.train_all.batch_size=2",
                 "--config.train_all.clip_seconds=3.5", "--config.train_all.dtype=bfloat16")
  for key, (model, trained) in model_configs(config).items():
    assert (model.data.clip_seconds, model.model.dtype) == (3.5, "bfloat16"), key
    if trained:
      assert (model.train.epochs, model.train.batch_size) == (1, 2), key
  unset = parse(f"--config={REPO_ROOT / path}")
  own = {k: (m.data.clip_seconds, m.train.epochs) for k, (m, _) in model_configs(unset).items()}
  module = demo_pipeline if "demo" in path else pipeline_base
  assert own == {k: (m.data.clip_seconds, m.train.epochs) for k, (m, _) in model_configs(module.get_config()).items()}


@pytest.mark.parametrize("order", ["per-model first", "train_all first"])
def test_a_per_model_setting_wins_over_train_all_in_either_order(order):
  per_model, everyone = "--config.models.feat.fine_tune.train.epochs=3", "--config.train_all.epochs=1"
  args = [per_model, everyone] if order == "per-model first" else [everyone, per_model]
  config = parse(f"--config={REPO_ROOT / 'configs/system1.py'}", *args)
  epochs = {k: m.train.epochs for k, (m, trained) in model_configs(config).items() if trained}
  assert epochs.pop("feat") == 3 and set(epochs.values()) == {1}
  # What the pipeline runs with: the resolved values in each model's spec.
  config.data.root = "/data"
  config.init.random_weights = "beats,eat"
  specs = {s.key: s for s in specs_lib.model_specs(config)}
  assert specs["feat"].config.train.epochs == 3 and specs["lbeats"].config.train.epochs == 1


def test_train_all_applies_to_a_model_changed_in_code_before_it_is_linked():
  """A derived config that changes a model after `get_config` keeps that value (it wins); `link_train_all` again
  makes the field follow `train_all` (what a pipeline config does last, as configs/demo_pipeline.py)."""
  config = pipeline_base.get_config()
  config.models.fbeats.fine_tune.train.epochs = 7
  config.train_all.epochs = 2
  assert config.models.fbeats.fine_tune.train.epochs == 7 and config.models.feat.fine_tune.train.epochs == 2
  with pytest.raises(ValueError, match=r"\['train_all.epochs'\] are set already"):
    specs_lib.link_train_all(config)
  config.train_all.epochs = 0
  specs_lib.link_train_all(config)
  config.train_all.epochs = 2
  assert config.models.fbeats.fine_tune.train.epochs == 2
  config.train_all.epochs = 0  # unset again: every model its own value
  assert config.models.fbeats.fine_tune.train.epochs == 7 and config.models.feat.fine_tune.train.epochs == 40
