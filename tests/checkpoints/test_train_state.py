"""Training checkpoints: the state checksum, and what a damaged latest step does to readers and to a resume."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asd_jax.checkpoints import train_state


def _state(value):
  return {"w": jnp.arange(12.0).reshape(3, 4) * value, "count": jnp.int32(value), "flag": jnp.bool_(True),
          "half": jnp.ones(5, jnp.bfloat16) * value}


def _abstract():
  return train_state.abstract_like(_state(1), jax.sharding.SingleDeviceSharding(jax.devices()[0]))


@pytest.fixture
def three_steps(tmp_path):
  ckpt = train_state.Checkpointer(tmp_path, keep=3)
  for step in (1, 2, 3):
    ckpt.save(step, _state(step), {"position": step}, {"run": "a"})
  ckpt.wait()
  ckpt.close()
  return tmp_path


def test_checksum_sees_any_changed_word_and_moved_values():
  base = train_state.checksums(_state(1))
  assert set(base) == {"['w']", "['count']", "['flag']", "['half']"}
  w = np.arange(12.0, dtype=np.float32).reshape(3, 4)
  one_bit = w.copy().view(np.uint32)
  one_bit[1, 2] ^= 1  # the smallest change of one float
  swapped = w.copy()
  swapped[0, 0], swapped[0, 1] = swapped[0, 1], swapped[0, 0]
  for other in (one_bit.view(np.float32), swapped, w.T.copy().reshape(3, 4)):
    assert train_state.checksums({"w": jnp.asarray(other)})["['w']"] != base["['w']"]
  assert train_state.checksums({"w": jnp.asarray(w)})["['w']"] == base["['w']"]


def test_a_state_that_does_not_match_its_checksum_is_refused_and_skipped_on_resume(three_steps, caplog):
  meta_file = three_steps / "3" / "meta" / "metadata"
  meta = json.loads(meta_file.read_text())
  meta[train_state.CHECKSUM_KEY]["['w']"] += 1  # as if the stored bits of w had changed after the save
  meta_file.write_text(json.dumps(meta))
  ckpt = train_state.Checkpointer(three_steps, keep=3)
  with pytest.raises(train_state.UnreadableCheckpointError,
                     match=r"checkpoint step 3 in .* is damaged: the checksum of 1 array\(s\) differs .*\['w'\]"):
    ckpt.restore(_abstract())  # a reader (embed) gets an error, not an older model
  assert ckpt.restore_meta() == {"run": "a"}  # the metadata itself reads; the checksum is not part of it
  with caplog.at_level("WARNING"):
    state, position, _ = ckpt.restore(_abstract(), fall_back=True)
  assert int(state["count"]) == 2 and position == {"position": 2}
  assert "checkpoint step 3" in caplog.text and "resuming from step 2" in caplog.text
  assert ckpt.latest_step() == 2 and sorted(p.name for p in three_steps.iterdir()) == ["1", "2", "3.unreadable"]
  ckpt.save(3, _state(3), {"position": 3}, {"run": "a"})  # the step can be written again
  ckpt.save(4, _state(4), {"position": 4}, {"run": "a"})
  ckpt.wait()
  assert sorted(p.name for p in three_steps.iterdir()) == ["2", "3", "3.unreadable", "4"]  # kept: the last 3
  assert int(ckpt.restore(_abstract())[0]["count"]) == 4
  ckpt.close()


def test_an_unreadable_latest_metadata_is_skipped_by_restore_meta(three_steps, caplog):
  (three_steps / "3" / "meta" / "metadata").unlink()
  ckpt = train_state.Checkpointer(three_steps)
  with caplog.at_level("WARNING"):
    assert ckpt.restore_meta() == {"run": "a"}
  assert "checkpoint step 3" in caplog.text and "older step" in caplog.text
  with pytest.raises(train_state.UnreadableCheckpointError, match="checkpoint step 3 .* is unreadable"):
    ckpt.restore_meta(3)
  ckpt.close()


def test_when_no_step_restores_nothing_is_moved(three_steps):
  for step in (1, 2, 3):
    (three_steps / str(step) / "data" / "metadata").unlink()
  ckpt = train_state.Checkpointer(three_steps)
  with pytest.raises(train_state.UnreadableCheckpointError) as error:
    ckpt.restore(_abstract(), fall_back=True)
  assert [line.split(" is ")[0].strip() for line in str(error.value).splitlines()[1:4]] == [
      f"checkpoint step {s} in {three_steps}" for s in (3, 2, 1)]
  assert "nothing was moved or deleted" in str(error.value)
  assert sorted(p.name for p in three_steps.iterdir()) == ["1", "2", "3"]
  ckpt.close()


def test_a_truncated_metadata_file_is_named_with_where_its_json_ends(tmp_path):
  """Issue 26.5: json raises its JSONDecodeError `from None` over an internal StopIteration(position); the message
  was `StopIteration: <position>`, naming no file."""
  ckpt = train_state.Checkpointer(tmp_path)
  ckpt.save(1, _state(1), {"position": 1}, {"run": "a", "config": {"lr": 0.001, "seed": 0}})
  ckpt.wait()
  ckpt.close()
  meta_file = tmp_path / "1" / "meta" / "metadata"
  text = meta_file.read_text()
  cut = text.index('"seed": ') + len('"seed": ')  # cut where a value is expected
  meta_file.write_text(text[:cut])
  ckpt = train_state.Checkpointer(tmp_path)
  try:
    for read in (ckpt.restore_meta, lambda: ckpt.restore(_abstract())):
      with pytest.raises(train_state.UnreadableCheckpointError) as error:
        read()
      assert str(error.value) == (
          f"checkpoint step 1 in {tmp_path} is unreadable ({meta_file}: JSONDecodeError: Expecting value: line 1 "
          f"column {cut + 1} (char {cut}); a truncated or damaged file)")
  finally:
    ckpt.close()


def test_a_checkpoint_from_before_the_hold_out_and_augmentation_fields_is_the_same_run_with_their_defaults():
  """Fine-tuning checkpoints written before `train.holdout_fraction` and `augment` existed trained on every clip
  without augmentation: they match a config with the defaults (configs/common.py), and differ from any other."""
  from configs import common

  config = common.get_config()
  now = {"config": json.loads(config.to_json_best_effort())}
  saved = json.loads(json.dumps(now))
  del saved["config"]["train"]["holdout_fraction"], saved["config"]["augment"]
  assert train_state.check_same_run("ckpt", saved, now, ("config.train.holdout_fraction", "config.augment")) == {}
  config.augment.mixup_prob = 0.5
  other = {"config": json.loads(config.to_json_best_effort())}
  with pytest.raises(ValueError, match=r"config.augment.mixup_prob: saved 0.0, now 0.5"):
    train_state.check_same_run("ckpt", saved, other, ("config.train.holdout_fraction", "config.augment"))


def test_a_checkpoint_from_before_sub_centres_and_the_supplemental_switch_matches_their_defaults():
  """`loss.num_subclusters` came inside the compared `config.loss`, `data.supplemental` as a field of its own:
  a checkpoint without either trained one ArcFace centre per class, on the supplementary clips too."""
  from configs import common

  config = common.get_config()
  now = {"config": json.loads(config.to_json_best_effort())}
  saved = json.loads(json.dumps(now))
  del saved["config"]["loss"]["num_subclusters"], saved["config"]["data"]["supplemental"]
  fields = ("config.loss", "config.data.supplemental")
  assert train_state.check_same_run("ckpt", saved, now, fields) == {}
  config.loss.num_subclusters = 4
  config.data.supplemental = False
  other = {"config": json.loads(config.to_json_best_effort())}
  with pytest.raises(ValueError) as error:
    train_state.check_same_run("ckpt", saved, other, fields)
  assert "config.loss.num_subclusters: saved 1, now 4" in str(error.value)
  assert "config.data.supplemental: saved True, now False" in str(error.value)
