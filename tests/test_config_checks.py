"""Config values that make no sense are refused by `config_checks.check` naming each field, in fine-tuning
configs and inside pipeline configs; sensible edge values pass."""

import math

import pytest

from asd_jax import config_checks
from configs import demo
from configs import pipeline_base


@pytest.mark.parametrize("field, value, why", [
    ("train.epochs", 0, "must be a positive integer"),
    ("train.epochs", -3, "must be a positive integer"),
    ("train.batch_size", 0, "must be a positive integer"),
    ("optim.learning_rate", -1e-4, "must be a number > 0"),
    ("optim.learning_rate", 0.0, "must be a number > 0"),
    ("optim.learning_rate", math.nan, "must be a number > 0"),
    ("data.clip_seconds", 0.0, "must be a number > 0"),
    ("data.sample_rate", -16000, "must be a positive integer"),
    ("lora.rank", 0, "must be a positive integer (to fine-tune without LoRA set lora.enabled=False)"),
    ("optim.warmup_fraction", 1.0, "must be a number in [0, 1)"),
    ("model.dropout_rate", 1.0, "must be a number in [0, 1)"),
    ("train.keep_checkpoints", 0, "must be a positive integer"),
    ("embed.batch_size", -1, "must be a positive integer"),
    ("data.channels", "left", "must be one of near, far, mean, cancel (a pipeline's may be empty: each model's own)"),
])
def test_nonsense_value_is_one_line_naming_the_field(field, value, why):
  config = demo.get_config()
  group, name = field.split(".")
  config[group][name] = value
  with pytest.raises(ValueError) as error:
    config_checks.check(config)
  assert str(error.value) == f"config.{field}={value!r} {why}"


def test_every_problem_is_listed_and_sensible_edges_pass():
  config = demo.get_config()
  config.train.epochs, config.optim.learning_rate = 0, -1.0
  assert config_checks.problems(config) == ["config.optim.learning_rate=-1.0 must be a number > 0",
                                            "config.train.epochs=0 must be a positive integer"]
  config = demo.get_config()
  config.train.checkpoint_every, config.optim.warmup_fraction, config.model.dropout_rate = 0, 0.0, 0.0
  config.optim.weight_decay, config.optim.grad_clip_norm, config.data.num_workers = 0.0, 0.0, 0
  config_checks.check(config)


def test_fields_inside_a_pipeline_config_are_checked_by_their_full_path():
  config = pipeline_base.get_config()
  config_checks.check(config)
  config.models.leat.fine_tune.train.epochs = 0
  config.threshold_quantile = 1.0
  assert config_checks.problems(config) == [
      "config.models.leat.fine_tune.train.epochs=0 must be a positive integer",
      "config.threshold_quantile=1.0 must be a number in (0, 1)"]
