"""Training-health checks: near-chance runs are flagged with the model named, healthy ones are not; clips longer
than the read length give a warning."""

import pytest

from asd_jax.finetuning import health


def test_near_chance_training_accuracy_is_flagged_naming_the_model():
  # The demo's FEAT before issue 22: 34 classes, the largest 40 of 322 clips, training accuracy 0.196 in eval mode.
  result = health.check_training(train_accuracy=0.196, num_classes=34, chance_accuracy=40 / 322, model="FEAT")
  assert result.near_chance and not result.healthy
  assert result.chance == pytest.approx(40 / 322)
  assert result.threshold == pytest.approx(40 / 322 + 0.1 * (1 - 40 / 322))  # 0.2118
  assert len(result.warnings) == 1 and result.warnings[0].startswith("FEAT: training accuracy 0.196 is near chance")


def test_a_converged_run_is_healthy():
  result = health.check_training(train_accuracy=0.95, num_classes=34, heldout_accuracy=0.87,
                                 chance_accuracy=40 / 322, model="FEAT")
  assert result.healthy and not result.near_chance and result.warnings == ()


def test_chance_without_class_counts_is_one_over_classes():
  # 10 classes, no counts: chance 0.1, threshold 0.1 + 0.1 * 0.9 = 0.19.
  assert health.check_training(train_accuracy=0.18, num_classes=10).near_chance
  assert not health.check_training(train_accuracy=0.20, num_classes=10).near_chance
  # A majority share below 1 / C (impossible for real counts) does not lower chance.
  assert health.check_training(train_accuracy=0.18, num_classes=10, chance_accuracy=0.01).chance == 0.1


def test_memorised_training_clips_are_flagged_by_the_held_out_accuracy():
  result = health.check_training(train_accuracy=1.0, num_classes=34, heldout_accuracy=0.15,
                                 chance_accuracy=40 / 322, model="LEAT")
  assert result.near_chance
  assert result.warnings[0].startswith("LEAT: held-out accuracy 0.150 is near chance")
  # No held-out clips (NaN or None) says nothing about generalisation.
  assert health.check_training(train_accuracy=1.0, num_classes=34, heldout_accuracy=float("nan")).healthy
  assert health.check_training(train_accuracy=1.0, num_classes=34, heldout_accuracy=None).healthy


def test_check_metrics_reads_the_last_end_of_training_row():
  rows = [{"step": 10, "loss": 12.0, "accuracy": 0.0},
          {"step": 100, "loss": 9.0, "train_accuracy": 0.5, "heldout_accuracy": 0.4},  # mid-run, no num_classes
          {"step": 200, "loss": 8.0, "train_accuracy": 0.1, "heldout_accuracy": 0.1, "num_classes": 34,
           "chance_accuracy": 0.124}]
  result = health.check_metrics(rows, model="FBEATs")
  assert result.near_chance and result.warnings[0].startswith("FBEATs: training accuracy 0.100")
  assert health.check_metrics(rows[:2]) is None  # no end-of-training evaluation (e.g. an older run)


def test_rejects_a_non_finite_training_accuracy():
  with pytest.raises(ValueError, match="FEAT: training accuracy is nan"):
    health.check_training(train_accuracy=float("nan"), num_classes=3, model="FEAT")


def test_clip_length_warning():
  # The demo reads 2 s; a DCASE dataset of 10 s clips loses 8 s of every clip.
  message = health.clip_length_warning([10.0, 10.0, 12.0], 2.0, model="LEAT")
  assert message.startswith("LEAT: only the first 2 s of each clip is read, but 3 of 3 clips are longer (up to 12 s)")
  assert health.clip_length_warning([2.0, 2.0, 1.5], 2.0) is None  # short clips are padded, not cut
  assert health.clip_length_warning([2.04], 2.0) is None  # within the rounding tolerance
  assert "1 of 2 clips" in health.clip_length_warning([2.0, 2.5], 2.0)
