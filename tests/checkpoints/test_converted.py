"""converted: safe .pt reading, strict key checking, Orbax save/restore of converted params."""

import argparse
import hashlib
import json
import shutil

import jax
import numpy as np
import pytest
import torch

from asd_jax.checkpoints import converted
from asd_jax.models import beats
from asd_jax.models import eat
from weights_conversion import convert_beats


def test_check_state_dict_lists_every_problem():
  expected = {"a.weight": (2, 3), "a.bias": (2,), "b.weight": (4,)}
  found = {"a.weight": np.zeros((3, 2)), "b.weight": np.zeros(4), "c.weight": np.zeros(1), "d": np.zeros(1)}
  with pytest.raises(converted.CheckpointError) as err:
    converted.check_state_dict(found, expected, source="model.pt")
  e = err.value
  assert e.missing == ["a.bias"] and e.unexpected == ["c.weight", "d"]
  assert e.misshaped == [("a.weight", (2, 3), (3, 2))]
  assert "model.pt" in str(e) and "a.weight: expected shape (2, 3), found (3, 2)" in str(e)
  converted.check_state_dict({"a": np.zeros(2), "opt": 1}, {"a": (2,)}, source="x", ignore={"opt"})


def test_load_torch_checkpoint_is_weights_only(tmp_path):
  good = tmp_path / "good.pt"
  torch.save({"cfg": {"n": 1}, "model": {"w": torch.ones(2)}}, good)
  loaded = converted.load_torch_checkpoint(good)
  assert loaded["cfg"] == {"n": 1}
  np.testing.assert_array_equal(converted.state_dict_to_numpy(loaded["model"])["w"], np.ones(2, np.float32))
  namespace = tmp_path / "namespace.pt"
  torch.save({"args": argparse.Namespace(a=1), "model": {}}, namespace)
  with pytest.raises(converted.CheckpointError, match="namespace.pt.*weights_only=True"):
    converted.load_torch_checkpoint(namespace)
  assert converted.load_torch_checkpoint(namespace, safe_globals=[argparse.Namespace])["args"].a == 1
  with pytest.raises(FileNotFoundError):
    converted.load_torch_checkpoint(tmp_path / "absent.pt")


def test_save_and_restore_converted(tmp_path):
  params = {"enc": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}, "bias": np.ones(3, np.float32)}
  converted.save_converted(tmp_path / "out", params, "toy", {"width": 3})
  converted.save_converted(tmp_path / "out", params, "toy", {"width": 3})  # overwriting is allowed
  assert converted.is_converted_checkpoint(tmp_path / "out")
  config, restored = converted.restore_converted(tmp_path / "out", "toy")
  assert config == {"width": 3}
  np.testing.assert_array_equal(restored["enc"]["kernel"], params["enc"]["kernel"])
  assert converted.count_params(restored) == 9
  assert set(converted.flatten_params(restored)) == {"enc/kernel", "bias"}
  with pytest.raises(converted.CheckpointError, match="expected config.json"):
    converted.restore_converted(tmp_path, "toy")


# --- damaged checkpoints: refused in one line naming the path, nothing half-written ---------------------------


@pytest.fixture(scope="module")
def converted_beats(fixtures, tmp_path_factory):
  """A BEATs folder converted from the fixture by the converter CLI's function."""
  out = tmp_path_factory.mktemp("converted") / "beats"
  convert_beats.convert(str(fixtures / "beats_tiny.pt"), str(out))
  return out


def _copy(folder, tmp_path):
  target = tmp_path / folder.name
  shutil.copytree(folder, target)
  return target


def _largest_chunk(folder):
  return max((p for p in (folder / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _one_line_naming(error, *texts):
  message = str(error)
  assert "\n" not in message, message
  assert "weights_only=False" not in message and "Traceback" not in message
  for text in texts:
    assert str(text) in message, (text, message)


def test_converted_folder_carries_digests_and_loads(converted_beats, fixtures):
  meta = json.loads((converted_beats / "config.json").read_text())
  chunk = _largest_chunk(converted_beats)
  assert meta["files"][chunk.relative_to(converted_beats).as_posix()]["sha256"] == hashlib.sha256(
      chunk.read_bytes()).hexdigest()
  assert sorted(p.name for p in converted_beats.parent.iterdir()) == ["beats"]  # no temporary folder left
  config, params = beats.load(converted_beats)
  _, reference = beats.load(fixtures / "beats_tiny.pt")
  jax.tree.map(np.testing.assert_array_equal, params, reference)


@pytest.mark.parametrize("damage", ["flipped_bytes", "missing_chunk", "truncated_chunk", "missing_config",
                                    "missing_params", "config_not_json"])
def test_damaged_converted_folder_is_refused_naming_it(converted_beats, tmp_path, damage):
  folder = _copy(converted_beats, tmp_path)
  chunk = _largest_chunk(folder)
  name = chunk.relative_to(folder).as_posix()
  if damage == "flipped_bytes":  # loaded silently before: every embedding NaN
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))
    expected = [folder, name, "differs from what was written"]
  elif damage == "missing_chunk":  # was a raw TensorStore error and "Event loop is closed" tracebacks
    chunk.unlink()
    expected = [folder, f"{name} is missing"]
  elif damage == "truncated_chunk":
    chunk.write_bytes(chunk.read_bytes()[:10])
    expected = [folder, name, "10 bytes"]
  elif damage == "missing_config":  # was "does not exist"
    (folder / "config.json").unlink()
    expected = [folder, "missing: config.json"]
  elif damage == "missing_params":
    shutil.rmtree(folder / "params")
    expected = [folder, "missing: params/"]
  else:
    (folder / "config.json").write_text("{not json")
    expected = [folder, "config.json is not the JSON a converter writes"]
  with pytest.raises(converted.DamagedCheckpointError) as error:
    beats.load(folder)
  _one_line_naming(error.value, *expected)


def test_converter_refuses_non_finite_tensors_and_writes_nothing(fixtures, tmp_path):
  checkpoint = torch.load(fixtures / "beats_tiny.pt", map_location="cpu", weights_only=True)
  checkpoint["model"]["encoder.layers.1.fc1.weight"][0, 3] = float("nan")
  checkpoint["model"]["layer_norm.bias"][0] = float("inf")
  torch.save(checkpoint, tmp_path / "nan.pt")
  with pytest.raises(converted.CheckpointError) as error:
    convert_beats.convert(str(tmp_path / "nan.pt"), str(tmp_path / "out"))
  assert "2 tensor(s) hold NaN or inf values: encoder.layers.1.fc1.weight, layer_norm.bias" in str(error.value)
  assert str(tmp_path / "nan.pt") in str(error.value)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.pt"]
  with pytest.raises(converted.CheckpointError, match="refusing to write 1 parameter"):
    converted.save_converted(tmp_path / "out", {"w": np.array([1.0, np.nan])}, "toy", {})
  assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.pt"]


def test_truncated_pt_and_safetensors_are_one_line_errors(fixtures, tmp_path):
  for name, load in (("beats_tiny.pt", beats.load), ("eat_tiny.pt", eat.load),
                     ("eat_tiny.safetensors", lambda p: eat.load(p, fixtures / "eat_tiny_hf_config.json"))):
    cut = tmp_path / name
    cut.write_bytes((fixtures / name).read_bytes()[:5000])
    with pytest.raises(converted.DamagedCheckpointError) as error:
      load(cut)
    _one_line_naming(error.value, cut, "is the file complete?")


def test_weights_only_refusal_names_the_classes_and_never_suggests_unsafe_loading(tmp_path):
  path = tmp_path / "namespace.pt"
  torch.save({"args": argparse.Namespace(a=1), "model": {}}, path)
  with pytest.raises(converted.DamagedCheckpointError) as error:
    converted.load_torch_checkpoint(path)
  _one_line_naming(error.value, path, "argparse.Namespace", "only reads checkpoints with weights_only=True")
  assert "weights_only` set to `False" not in str(error.value)


def test_save_converted_replaces_a_converted_folder_only(tmp_path):
  params = {"w": np.arange(3, dtype=np.float32)}
  converted.save_converted(tmp_path / "out", params, "toy", {"v": 1})
  converted.save_converted(tmp_path / "out", {"w": params["w"] + 1}, "toy", {"v": 2})
  config, restored = converted.restore_converted(tmp_path / "out", "toy")
  assert config == {"v": 2} and restored["w"].tolist() == [1.0, 2.0, 3.0]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
  (tmp_path / "home").mkdir()
  (tmp_path / "home" / "notes.txt").write_text("mine")
  with pytest.raises(FileExistsError, match="holds other files than a converted checkpoint"):
    converted.save_converted(tmp_path / "home", params, "toy", {})
  assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["notes.txt"]


def test_folder_converted_without_digests_still_loads_with_a_warning(tmp_path, caplog):
  converted.save_converted(tmp_path / "out", {"w": np.ones(2, np.float32)}, "toy", {})
  meta = json.loads((tmp_path / "out" / "config.json").read_text())
  del meta["files"]
  (tmp_path / "out" / "config.json").write_text(json.dumps(meta))
  with caplog.at_level("WARNING"):
    _, restored = converted.restore_converted(tmp_path / "out", "toy")
  assert restored["w"].tolist() == [1.0, 1.0]
  assert any("without file digests" in r.getMessage() for r in caplog.records)


def test_a_full_disk_while_converting_names_the_folder_and_leaves_the_old_one(tmp_path, monkeypatch):
  """Issue 26.3: a disk error names its path (here Orbax's write of the params' metadata, through Orbax's own error
  path); the converted folder already there is untouched."""
  import errno  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  from etils import epath  # pylint: disable=import-outside-toplevel
  folder = tmp_path / "encoder"
  converted.save_converted(folder, {"w": np.ones(3)}, "eat", {"depth": 1})
  real_write_text = epath.Path.write_text

  def full_disk(path, *args, **kwargs):
    if ".staging-" in str(path):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_write_text(path, *args, **kwargs)

  monkeypatch.setattr(epath.Path, "write_text", full_disk)
  with pytest.raises(OSError) as error:
    converted.save_converted(folder, {"w": np.zeros(3)}, "eat", {"depth": 1})
  monkeypatch.undo()
  assert str(error.value) == f"cannot write {folder} (OSError: [Errno 28] No space left on device); it is left as it was"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder"]  # no staging folder left
  np.testing.assert_array_equal(converted.restore_converted(folder, "eat")[1]["w"], np.ones(3))
