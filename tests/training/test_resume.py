"""A run killed after a checkpoint and resumed by fresh objects ends bit-identical to an uninterrupted run."""

import functools

import jax
import numpy as np
import pytest

from asd_jax.checkpoints import train_state
from asd_jax.finetuning import lora
from asd_jax.models import classifier
from asd_jax.runtime import sharding as shd
from asd_jax.training import loop
from asd_jax.training import optimizer
from asd_jax.training import train_log
from asd_jax.training import train_step as ts
from configs import common

STEPS = 6


def _run(tiny_encoder, frontend, array_batches, workdir, stop_after=None):
  """Everything built from scratch, as a new process would."""
  model = classifier.Classifier(encoder=tiny_encoder(), num_classes=3, frontend=frontend, dropout_rate=0.2)
  data_rng = np.random.default_rng(0)
  wav = data_rng.normal(size=(12, 1024)).astype(np.float32)
  label = np.arange(12, dtype=np.int32) % 3
  params = model.init(jax.random.key(1), wav[:1])["params"]
  tree = {"model": params, "lora": lora.init_lora(params, jax.random.key(2), rank=2)}
  labels = lora.trainable_labels(tree, train_encoder=False)
  optim = common.get_config().optim
  optim.update(dict(learning_rate=1e-2, warmup_steps=2, schedule="cosine",
                    weight_decay=0.01, grad_clip_norm=1.0))
  tx, _ = optimizer.make_optimizer(optim, STEPS, labels)
  loss = lora.with_lora(functools.partial(classifier.classification_loss, model=model), alpha=4.0)
  step = ts.make_train_step(loss, tx, labels)
  ckpt = train_state.Checkpointer(workdir / "checkpoints", keep=2)
  writer = train_log.MetricWriter(workdir)
  state = loop.fit(ts.create_state(tree, tx), step, array_batches(wav, label, 4), num_steps=STEPS,
                   mesh=shd.data_mesh(), rng=jax.random.key(3), checkpointer=ckpt, checkpoint_every=3,
                   meta={"labels": ["a", "b", "c"]}, writer=writer, log_every=1, progress=False,
                   stop_after=stop_after)
  ckpt.close()
  return jax.device_get(state)


@pytest.mark.slow  # ~43 s; the same guarantee through train() is tests/training/test_train_resume.py (default)
def test_killed_and_resumed_run_equals_uninterrupted_run(tiny_encoder, frontend, array_batches, tmp_path):
  straight = _run(tiny_encoder, frontend, array_batches, tmp_path / "straight")
  first = _run(tiny_encoder, frontend, array_batches, tmp_path / "resumed", stop_after=3)
  assert int(first.step) == 3
  resumed = _run(tiny_encoder, frontend, array_batches, tmp_path / "resumed")
  assert int(straight.step) == int(resumed.step) == STEPS
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), straight.params, resumed.params)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), straight.opt_state, resumed.opt_state)
  # The first half really trained (otherwise equality would be trivial), and metrics were logged per step.
  assert not np.array_equal(first.params["model"]["head"]["kernel"], straight.params["model"]["head"]["kernel"])
  rows = train_log.read_jsonl(tmp_path / "resumed" / "metrics.jsonl")
  assert [r["step"] for r in rows if "loss" in r] == list(range(1, STEPS + 1))
  assert sum("compile_s" in r for r in rows) == 2
  meta = train_state.Checkpointer(tmp_path / "resumed" / "checkpoints").restore_meta()
  assert meta == {"labels": ["a", "b", "c"]}


def test_check_same_run_names_each_differing_field():
  classes = [{"name": f"fan/c{i}"} for i in range(6)]
  saved = {"config": {"lora": {"rank": 4, "alpha": 8.0}, "seed": 0}, "label_space": {"classes": classes}}
  now = {"config": {"lora": {"rank": 4, "alpha": 4.0}, "seed": 0},
         "label_space": {"classes": classes[:5] + [{"name": "fan/noise"}]}, "num_steps": 8}
  fields = ("config.lora", "config.seed", "label_space", "num_steps")
  train_state.check_same_run("/ckpt", saved, saved, fields)  # the same metadata passes
  with pytest.raises(ValueError) as error:
    train_state.check_same_run("/ckpt", saved, now, fields, hint="use the saved config")
  assert str(error.value).splitlines() == [
      "checkpoint /ckpt does not match this run's settings:",
      "  config.lora.alpha: saved 8.0, now 4.0",
      "  label_space.classes: saved 6 entries, now 6 entries (only saved: ['fan/c5'], only now: ['fan/noise'])",
      "  num_steps: saved <absent>, now 8",
      "use the saved config"]


def test_a_checkpoint_of_another_channel_policy_is_refused():
  """`config.data.channels` is part of a run's identity (RUN_FIELDS, and so of the pipeline's model-folder stamps);
  a checkpoint saved before the field existed was read with the channel mean and compares as "mean"."""
  from asd_jax.finetuning import fine_tune  # pylint: disable=import-outside-toplevel
  assert "config.data.channels" in fine_tune.RUN_FIELDS
  assert "config.data.channels" in train_state.config_fields(fine_tune.RUN_FIELDS)
  fields = ("config.data.channels",)
  saved = {"config": {"data": {"channels": "near"}}}
  train_state.check_same_run("/ckpt", saved, {"config": {"data": {"channels": "near"}}}, fields)
  with pytest.raises(ValueError, match=r"config.data.channels: saved 'near', now 'cancel'"):
    train_state.check_same_run("/ckpt", saved, {"config": {"data": {"channels": "cancel"}}}, fields)
  legacy = {"config": {"data": {"clip_seconds": 10.0}}}
  train_state.check_same_run("/ckpt", legacy, {"config": {"data": {"channels": "mean"}}}, fields)
  with pytest.raises(ValueError, match=r"config.data.channels: saved 'mean', now 'near'"):
    train_state.check_same_run("/ckpt", legacy, {"config": {"data": {"channels": "near"}}}, fields)


def test_pretraining_runs_compare_the_channel_policy():
  from asd_jax.pretraining import pretrain  # pylint: disable=import-outside-toplevel
  assert "config.data.channels" in pretrain.RUN_FIELDS
