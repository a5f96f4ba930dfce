"""Held-out clips: the split is deterministic, per class and independent of where the dataset lives; the evaluator's
accuracy equals the classifier applied by hand; a fine-tuning run never trains on its held-out clips and logs its
accuracy on them with the final parameters."""

import collections
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asd_jax.audio import wav as wavlib
from asd_jax.data import labels as labels_lib
from asd_jax.data import records as rec
from asd_jax.data import synth
from asd_jax.finetuning import fine_tune
from asd_jax.finetuning import holdout
from asd_jax.finetuning import restore
from asd_jax.models import classifier
from asd_jax.models import networks
from asd_jax.training import train_log
from configs import demo


def _records(root, counts):
  """`{class attribute value: clips}` -> records of one machine type under `root`, numbered per class."""
  out = []
  for value, n in counts.items():
    for i in range(n):
      out.append(rec.ClipRecord(path=f"{root}/fan/train/section_00_source_train_normal_{i:04d}_m-n_{value}.wav",
                                machine="fan", section="00", split="train", domain="source", label="normal",
                                attributes=(("m-n", value),)))
  return out


def test_split_holds_out_a_rounded_fraction_of_each_class_and_keeps_two():
  records = _records("/data", {"W": 40, "X": 10, "Y": 5, "Z": 3})
  space = labels_lib.LabelSpace.from_records(records)
  train, held = holdout.split(records, space, 0.15)
  held_per_class = collections.Counter(r.attributes[0][1] for r in held)
  # round(6.0) = 6, round(1.5) = 2 (half to even), round(0.75) = 1, round(0.45) = 0.
  assert held_per_class == {"W": 6, "X": 2, "Y": 1}
  assert sorted(train + held) == sorted(records) and not set(train) & set(held)
  assert train == [r for r in records if r not in held]  # the input order is kept
  # A large fraction never leaves a class with fewer than two training clips.
  _, held = holdout.split(records, space, 0.9)
  left = collections.Counter(r.attributes[0][1] for r in records) - collections.Counter(
      r.attributes[0][1] for r in held)
  assert min(left.values()) == holdout.MIN_TRAIN_PER_CLASS
  assert holdout.split(records, space, 0.0) == (records, [])
  with pytest.raises(ValueError, match="must be in"):
    holdout.split(records, space, 1.0)


def test_split_depends_on_the_clips_not_on_their_order_or_root():
  records = _records("/data", {"W": 20, "X": 12})
  space = labels_lib.LabelSpace.from_records(records)
  _, held = holdout.split(records, space, 0.25)
  _, held_shuffled = holdout.split(records[::-1], space, 0.25)
  _, held_moved = holdout.split(_records("/elsewhere/copy", {"W": 20, "X": 12}), space, 0.25)
  names = lambda rs: sorted(pathlib.Path(r.path).name for r in rs)  # noqa: E731
  assert names(held) == names(held_shuffled) == names(held_moved)
  _, other_seed = holdout.split(records, space, 0.25, seed=1)
  assert names(other_seed) != names(held)


def test_subset_and_chance_and_accuracy():
  records = _records("/data", {"W": 10})
  assert holdout.subset(records, 0) == records and holdout.subset(records, 20) == records
  picked = holdout.subset(records, 4)
  assert len(picked) == 4 and picked == [r for r in records if r in picked]
  assert holdout.chance_accuracy([0, 0, 0, 1]) == 0.75
  assert holdout.accuracy(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), np.array([0, 1, 1])) == pytest.approx(2 / 3)
  assert np.isnan(holdout.accuracy(np.zeros((0, 2)), np.zeros(0, np.int64)))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  """One machine type, 2 s clips: 30 source + 3 target train clips in 5 classes, 6 supplementary clips."""
  root = tmp_path_factory.mktemp("synth")
  synth.generate(root, scale=0.03, seed=0, machines=["ToyCar"], duration=2.0)
  return str(root)


def _config(root, network):
  config = demo.get_config()
  config.data.root = root
  config.data.clip_seconds = 2.0
  config.model.network = network
  config.model.preset = "tiny"
  config.lora.enabled = False
  config.optim.learning_rate = 1e-2
  config.train.epochs = 2
  config.train.batch_size = 4
  config.train.log_every = 1
  config.train.holdout_fraction = 0.2
  config.train.eval_every = 3
  config.embed.batch_size = 4
  return config


def _by_hand(model, params, clips, space):
  """Accuracy of `model` applied directly to the clips as read from disk (no evaluator, no Grain)."""
  wav = np.stack([wavlib.load_wav(r.path, sample_rate=16000, duration_s=2.0) for r in clips])
  cosine = model.apply({"params": params}, jnp.asarray(wav))["cosine"]
  return float(np.mean(np.argmax(np.asarray(cosine), -1) == np.asarray(space.labels(clips))))


def test_evaluator_equals_the_classifier_applied_by_hand(dataset, tiny_registered):
  config = _config(dataset, tiny_registered)
  clips = fine_tune.training_records(fine_tune.records(config, training=True), config)
  space = labels_lib.LabelSpace.from_records(clips)
  network = networks.build_network(config, space.num_classes)
  assert isinstance(network.module, classifier.Classifier)
  params, _ = network.init(jax.random.key(1))
  # 7 clips: two batches of 4, the second padded (a padded row must not count).
  evaluator = holdout.Evaluator(config, network, {"some": clips[:7], "none": []}, space)
  result = evaluator(params, {})
  assert set(result) == {"some_accuracy"}
  assert result["some_accuracy"] == pytest.approx(_by_hand(network.module, params, clips[:7], space))
  scores = evaluator.scores(params, {})["some"]
  np.testing.assert_allclose(scores, network.module.apply({"params": params}, jnp.asarray(np.stack(
      [wavlib.load_wav(r.path, sample_rate=16000, duration_s=2.0) for r in clips[:7]])))["cosine"],
      rtol=1e-5, atol=1e-6)


def test_training_never_sees_held_out_clips_and_logs_their_accuracy(dataset, tiny_registered, tmp_path,
                                                                     monkeypatch):
  config = _config(dataset, tiny_registered)
  clips = fine_tune.records(config, training=True)
  space = fine_tune.label_space(config, clips=clips)
  fit, held = holdout.split(fine_tune.training_records(clips, config), space, 0.2)
  assert held
  given, original = [], fine_tune.train_batches

  def recording_train_batches(config, space, clips):  # what the run builds its batches from
    given.extend(clips)
    return original(config, space, clips)

  monkeypatch.setattr(fine_tune, "train_batches", recording_train_batches)
  workdir = tmp_path / "work"
  fine_tune.train(config, str(workdir), progress=False)
  assert sorted(r.path for r in given) == sorted(r.path for r in fit)
  rows = train_log.read_jsonl(workdir / "metrics.jsonl")
  steps = 2 * (len(fit) // 4)  # the epochs count the training clips only
  assert [r["step"] for r in rows if "loss" in r] == list(range(1, steps + 1))
  evaluated = [r for r in rows if "heldout_accuracy" in r]
  assert [r["step"] for r in evaluated] == sorted({*range(3, steps + 1, 3), steps})
  final = evaluated[-1]
  assert final["num_classes"] == space.num_classes and final["heldout_clips"] == len(held)
  assert final["chance_accuracy"] == pytest.approx(holdout.chance_accuracy(space.labels(fit)))
  assert "num_classes" not in evaluated[0]  # only after the last step
  # The logged accuracies are the final parameters' on exactly those clips.
  network, params, _ = restore.trained_params(config, str(workdir))
  assert final["heldout_accuracy"] == pytest.approx(_by_hand(network.module, params, held, space))
  assert final["train_accuracy"] == pytest.approx(_by_hand(network.module, params, fit, space))
