"""checkpoint_io: safe .pt reading, strict key checking, Orbax save/restore of converted params."""

import argparse

import numpy as np
import pytest
import torch

from asd_jax.models import checkpoint_io


def test_check_state_dict_lists_every_problem():
  expected = {"a.weight": (2, 3), "a.bias": (2,), "b.weight": (4,)}
  found = {"a.weight": np.zeros((3, 2)), "b.weight": np.zeros(4), "c.weight": np.zeros(1), "d": np.zeros(1)}
  with pytest.raises(checkpoint_io.CheckpointError) as err:
    checkpoint_io.check_state_dict(found, expected, source="model.pt")
  e = err.value
  assert e.missing == ["a.bias"] and e.unexpected == ["c.weight", "d"]
  assert e.misshaped == [("a.weight", (2, 3), (3, 2))]
  assert "model.pt" in str(e) and "a.weight: expected shape (2, 3), found (3, 2)" in str(e)
  checkpoint_io.check_state_dict({"a": np.zeros(2), "opt": 1}, {"a": (2,)}, source="x", ignore={"opt"})


def test_load_torch_checkpoint_is_weights_only(tmp_path):
  good = tmp_path / "good.pt"
  torch.save({"cfg": {"n": 1}, "model": {"w": torch.ones(2)}}, good)
  loaded = checkpoint_io.load_torch_checkpoint(good)
  assert loaded["cfg"] == {"n": 1}
  np.testing.assert_array_equal(checkpoint_io.state_dict_to_numpy(loaded["model"])["w"], np.ones(2, np.float32))
  namespace = tmp_path / "namespace.pt"
  torch.save({"args": argparse.Namespace(a=1), "model": {}}, namespace)
  with pytest.raises(checkpoint_io.CheckpointError, match="(?s)namespace.pt.*weights_only=True"):
    checkpoint_io.load_torch_checkpoint(namespace)
  assert checkpoint_io.load_torch_checkpoint(namespace, safe_globals=[argparse.Namespace])["args"].a == 1
  with pytest.raises(FileNotFoundError):
    checkpoint_io.load_torch_checkpoint(tmp_path / "absent.pt")


def test_save_and_restore_converted(tmp_path):
  params = {"enc": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}, "bias": np.ones(3, np.float32)}
  checkpoint_io.save_converted(tmp_path / "out", params, "toy", {"width": 3})
  checkpoint_io.save_converted(tmp_path / "out", params, "toy", {"width": 3})  # overwriting is allowed
  assert checkpoint_io.is_converted_checkpoint(tmp_path / "out")
  config, restored = checkpoint_io.restore_converted(tmp_path / "out", "toy")
  assert config == {"width": 3}
  np.testing.assert_array_equal(restored["enc"]["kernel"], params["enc"]["kernel"])
  assert checkpoint_io.count_params(restored) == 9
  assert set(checkpoint_io.flatten_params(restored)) == {"enc/kernel", "bias"}
  with pytest.raises(checkpoint_io.CheckpointError, match="expected config.json"):
    checkpoint_io.restore_converted(tmp_path, "toy")
