"""Label space: classes per machine x attributes plus supplementary classes, JSON round trip."""

import json

import pytest

from asd_jax.data import labels
from asd_jax.data import records as rec


def _r(machine, attrs=(), kind=rec.KIND_MACHINE, split="train", path=None):
  return rec.ClipRecord(path=path or f"{machine}/{attrs}/{kind}.wav", machine=machine, section="00",
                        split=split, domain="source", label="normal", attributes=attrs, kind=kind)


RECORDS = [
    _r("fan", (("m-n", "W"),)), _r("fan", (("m-n", "X"),)), _r("fan", (("m-n", "W"),), path="b"),
    _r("ToyCar", (("car", "A1"), ("spd", "28V"))), _r("bearing"),
    _r("fan", (("m-n", "W"),), kind=rec.KIND_CLEAN, split="supplemental"),
    _r("fan", kind=rec.KIND_NOISE, split="supplemental"),
]


def test_classes_sorted_and_indexed():
  space = labels.LabelSpace.from_records(RECORDS)
  assert space.names == ["ToyCar/car_A1_spd_28V", "bearing/noAttribute", "fan/clean",
                         "fan/m-n_W", "fan/m-n_X", "fan/noise"]
  assert space.labels(RECORDS) == [3, 4, 3, 0, 1, 2, 5]
  # Order of the input records does not matter.
  assert labels.LabelSpace.from_records(RECORDS[::-1]) == space


def test_json_round_trip(tmp_path):
  space = labels.LabelSpace.from_records(RECORDS)
  space.save(tmp_path / "labels.json")
  loaded = labels.LabelSpace.load(tmp_path / "labels.json")
  assert loaded == space and loaded.labels(RECORDS) == space.labels(RECORDS)


def test_load_checks_consistency():
  body = json.loads(labels.LabelSpace.from_records(RECORDS).to_json())
  swapped = dict(body, classes=body["classes"][::-1])
  with pytest.raises(ValueError, match="sorted"):
    labels.LabelSpace.from_json(json.dumps(swapped))
  renamed = json.loads(json.dumps(body))
  renamed["classes"][3]["name"] = "fan/m-n_Z"
  with pytest.raises(ValueError, match="does not match its fields"):
    labels.LabelSpace.from_json(json.dumps(renamed))
  with pytest.raises(ValueError, match="num_classes"):
    labels.LabelSpace.from_json(json.dumps(dict(body, num_classes=3)))
  with pytest.raises(ValueError, match="expected format"):
    labels.LabelSpace.from_json(json.dumps(dict(body, format="other")))


def test_unknown_record():
  space = labels.LabelSpace.from_records(RECORDS[:2])
  unseen = _r("fan", (("m-n", "Q"),), path="unseen.wav")
  with pytest.raises(KeyError, match="unseen.wav"):
    space.index(unseen)
  assert space.index(unseen, default=-1) == -1
  with pytest.raises(ValueError, match="fan/m-n_Q"):
    space.check_covers([unseen])
