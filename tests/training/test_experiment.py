"""Parameter counts of the report's systems (abstract, no compute) and the dry-run summary."""

import jax
import pytest

from asd_jax.training import experiment
from asd_jax.training import lora
from configs import fbeats, feat, lbeats, leat

NUM_CLASSES = 7
LORA_FULL_SIZE = 12 * 3 * 2 * 768 * 64  # blocks x (q, v, out) x (A, B) x dim x rank


def _counts(config):
  arch, _ = experiment.architecture(config.model)
  model = experiment.build_model(config.model, arch, NUM_CLASSES)
  tree = experiment.init_trainable(config, model, jax.random.key(0), abstract=True)
  rows = {name: (total, train) for name, total, train in
          lora.summary(tree, experiment.labels_for(config, tree), depth=2)}
  return rows


def test_lbeats_trains_exactly_lora_plus_head():
  pytest.importorskip("asd_jax.models.beats")
  assert LORA_FULL_SIZE == 3_538_944
  rows = _counts(lbeats.get_config())
  assert rows["lora/encoder"] == (LORA_FULL_SIZE, LORA_FULL_SIZE)
  assert rows["model/head"] == (768 * NUM_CLASSES,) * 2
  assert rows["model/encoder"][1] == 0
  assert rows["total"][1] == LORA_FULL_SIZE + 768 * NUM_CLASSES


def test_fbeats_trains_everything():
  pytest.importorskip("asd_jax.models.beats")
  rows = _counts(fbeats.get_config())
  assert "lora/encoder" not in rows
  assert rows["total"][0] == rows["total"][1] > 90_000_000  # BEATs base has ~90 M parameters


def test_leat_trains_exactly_lora_plus_head():
  pytest.importorskip("asd_jax.models.eat")
  rows = _counts(leat.get_config())
  assert rows["lora/encoder"] == (LORA_FULL_SIZE, LORA_FULL_SIZE)
  assert rows["total"][1] == LORA_FULL_SIZE + 768 * NUM_CLASSES


def test_feat_trains_everything_but_the_fixed_positions():
  pytest.importorskip("asd_jax.models.eat")
  config = feat.get_config()
  arch, _ = experiment.architecture(config.model)
  model = experiment.build_model(config.model, arch, NUM_CLASSES)
  tree = experiment.init_trainable(config, model, jax.random.key(0), abstract=True)
  labels = experiment.labels_for(config, tree)
  assert labels["model"]["encoder"]["positions"] == lora.FROZEN
  rows = {name: (total, train) for name, total, train in lora.summary(tree, labels, depth=3)}
  assert rows["total"][1] == rows["total"][0] - rows["model/encoder/positions"][0]
