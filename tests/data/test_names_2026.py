"""DCASE 2026 Task 2 names and layouts, on names copied from the real dataset's file lists.

Source of every real name below (unless marked otherwise): the file lists of the real 2026 development, additional
training and evaluation sets in github.com/outman-goutian/dcase2026_task2 at commit e3c42f5 (`data/train.scp`:
the training clips of all twelve machine types; `data/test_dev.scp`: the development test clips;
`data/test_final.scp`: the evaluation test clips). The machine lists are the official baseline's
(nttcslab/dcase2023_task2_baseline_ae, `datasets/machine_type_2026_{dev,eval}.yaml`).
"""

import pathlib

import numpy as np
import pytest
import soundfile

from asd_jax.data import filenames, labels, layout, releases
from asd_jax.data import records as rec

# train.scp, ToyCarEmu: the repeated key `mic` (the example name).
TOYCAREMU_TRAIN = "section_00_source_train_normal_0000_car_D2_spd_5_mic_2_mic_1.wav"
TOYCAREMU_TRAIN_2 = "section_00_source_train_normal_0895_car_D2_spd_5_mic_2_mic_1.wav"
TOYDRONE_TARGET = "section_00_target_train_normal_0000_car_C2_spd_3_mic_2_mic_1.wav"  # train.scp, ToyDrone
BLOWER = "section_00_source_train_normal_0000_nzl_1_pow_1.wav"  # train.scp, BlowerDustCollector
GEARBOX_X = "section_00_target_train_normal_0000_pro_X.wav"  # train.scp, gearboxEmu
GEARBOX_Y_TRAIN = "section_00_target_train_normal_0002_pro_Y.wav"  # train.scp, gearboxEmu
GEARBOX_Y_TEST_NORMAL = "section_00_target_test_normal_0001_pro_y.wav"  # test_dev.scp, gearboxEmu: lower-case y
GEARBOX_Y_TEST_ANOMALY = "section_00_target_test_anomaly_0000_pro_Y.wav"  # test_dev.scp, gearboxEmu
SANDER_TARGET = "section_00_target_train_normal_0001_spd_3_grit_120.wav"  # train.scp, Sander
BEARING = "section_00_target_train_normal_0000_noAttribute.wav"  # train.scp, bearingEmu
TOYCAR_TEST = "section_00_source_test_anomaly_0001_noAttribute.wav"  # test_dev.scp, ToyCar
TOYCAREMU_TEST = "section_00_target_test_anomaly_0012_car_A2_spd_4_mic_2_mic_1.wav"  # test_dev.scp, ToyCarEmu
EVAL_FIRST, EVAL_LAST = "section_00_0000.wav", "section_00_0199.wav"  # test_final.scp, Sander


def test_repeated_key_keeps_both_values_in_order():
  parsed = filenames.parse_name(TOYCAREMU_TRAIN)
  assert (parsed.section, parsed.domain, parsed.split, parsed.label, parsed.number) == (
      "00", "source", "train", "normal", "0000")
  pairs = filenames.parse_attribute_string(parsed.attribute_string)
  assert pairs == (("car", "D2"), ("spd", "5"), ("mic", "2"), ("mic", "1"))
  assert filenames.attribute_string(pairs) == "car_D2_spd_5_mic_2_mic_1"  # the name round-trips
  drone = filenames.parse_attribute_string(filenames.parse_name(TOYDRONE_TARGET).attribute_string)
  assert drone == (("car", "C2"), ("spd", "3"), ("mic", "2"), ("mic", "1"))


@pytest.mark.parametrize("name, domain, attrs", [
    (BLOWER, "source", (("nzl", "1"), ("pow", "1"))),
    (GEARBOX_X, "target", (("pro", "X"),)),
    (GEARBOX_Y_TRAIN, "target", (("pro", "Y"),)),
    (GEARBOX_Y_TEST_NORMAL, "target", (("pro", "y"),)),
    (SANDER_TARGET, "target", (("spd", "3"), ("grit", "120"))),
    (BEARING, "target", ()),
    (TOYCAR_TEST, "source", ()),
])
def test_real_2026_names_parse(name, domain, attrs):
  parsed = filenames.parse_name(name)
  assert parsed.domain == domain
  assert filenames.parse_attribute_string(parsed.attribute_string) == attrs


def test_evaluation_test_names_hide_domain_and_label():
  for name, number in ((EVAL_FIRST, "0000"), (EVAL_LAST, "0199")):
    parsed = filenames.parse_name(name)
    assert (parsed.section, parsed.number, parsed.split, parsed.domain, parsed.label) == (
        "00", number, "test", None, None)


def test_toycar_test_numbers_run_across_categories():
  """ToyCar/ToyCarEmu number their test clips 0000-0199 over all four categories: 0012 is a target anomaly."""
  parsed = filenames.parse_name(TOYCAREMU_TEST)
  assert (parsed.number, parsed.domain, parsed.label) == ("0012", "target", "anomaly")


def test_repeated_key_is_kept_by_records_and_labels_and_refused_by_a_dict():
  r = rec.ClipRecord(path=f"/d/ToyCarEmu/train/{TOYCAREMU_TRAIN}", machine="ToyCarEmu", section="00",
                     split="train", domain="source", label="normal",
                     attributes=(("car", "D2"), ("spd", "5"), ("mic", "2"), ("mic", "1")))
  assert labels.class_of(r).name == "ToyCarEmu/car_D2_spd_5_mic_2_mic_1"
  other_mic = rec.ClipRecord(path="/d/x.wav", machine="ToyCarEmu", section="00", split="train",
                             attributes=(("car", "D2"), ("spd", "5"), ("mic", "2"), ("mic", "2")))
  space = labels.LabelSpace.from_records([r, other_mic])
  assert space.num_classes == 2  # the second mic value tells them apart
  saved = labels.LabelSpace.from_json(space.to_json())
  assert saved == space and saved.classes[0].attributes == (("car", "D2"), ("spd", "5"), ("mic", "2"), ("mic", "1"))
  with pytest.raises(ValueError, match=r"ToyCarEmu/train/.*mic_2_mic_1\.wav: attribute name\(s\) \['mic'\] repeat"):
    _ = r.attribute_dict


def _wav(path: pathlib.Path, seconds: float = 0.05, channels: int = 2) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  soundfile.write(str(path), np.zeros((int(seconds * 16000), channels), np.int16), 16000, subtype="PCM_16")


@pytest.fixture
def dev_2026(tmp_path):
  """A 2026 dev-layout tree (no supplemental/) with real names and an attributes_00.csv listing the pairs as the
  2025 CSVs do (file_name,d1p,d1v,...; the 2026 CSV itself is not in the file lists, so its columns are assumed)."""
  names = {"ToyCarEmu": [f"train/{TOYCAREMU_TRAIN}", f"train/{TOYCAREMU_TRAIN_2}", f"test/{TOYCAREMU_TEST}"],
           "gearboxEmu": [f"train/{GEARBOX_X}", f"train/{GEARBOX_Y_TRAIN}", f"test/{GEARBOX_Y_TEST_NORMAL}",
                          f"test/{GEARBOX_Y_TEST_ANOMALY}"],
           "bearingEmu": [f"train/{BEARING}"]}
  for machine, files in names.items():
    rows = []
    for f in files:
      _wav(tmp_path / machine / f)
      pairs = filenames.parse_attribute_string(filenames.parse_name(pathlib.Path(f).name).attribute_string)
      cells = [x for kv in pairs for x in kv] or ["noAttribute", ""]
      rows.append(",".join([f"{machine}/{f}", *cells]))
    width = max(r.count(",") for r in rows)
    header = "file_name," + ",".join(f"d{i // 2 + 1}{'pv'[i % 2]}" for i in range(width))
    (tmp_path / machine / "attributes_00.csv").write_text(
        header + "\n" + "\n".join(r + "," * (width - r.count(",")) for r in rows) + "\n")
  return tmp_path


def test_2026_dev_layout_scans_with_repeated_keys_and_both_pro_cases(dev_2026):
  records = layout.scan_dataset(dev_2026, require_train=True, channels="cancel")
  by_name = {pathlib.Path(r.path).name: r for r in records}
  assert by_name[TOYCAREMU_TRAIN].attributes == (("car", "D2"), ("spd", "5"), ("mic", "2"), ("mic", "1"))
  assert by_name[GEARBOX_Y_TEST_NORMAL].attributes == (("pro", "y"),)
  assert by_name[GEARBOX_Y_TEST_ANOMALY].attributes == (("pro", "Y"),)
  space = labels.LabelSpace.from_records([r for r in records if rec.is_fine_tuning_clip(r)])
  assert "gearboxEmu/pro_Y" in space.names and "gearboxEmu/pro_y" not in space.names
  # A test clip's class is never needed for scoring; `pro_y` is an unseen class like any unseen attribute.
  assert space.index(by_name[GEARBOX_Y_TEST_NORMAL], default=-1) == -1
  assert space.index(by_name[GEARBOX_Y_TEST_ANOMALY], default=-1) == space.names.index("gearboxEmu/pro_Y")


def test_2026_eval_layout_and_a_mono_clip_under_cancel(tmp_path):
  for name in (f"train/{BLOWER}", f"test/{EVAL_FIRST}", f"test/{EVAL_LAST}"):
    _wav(tmp_path / "BlowerDustCollector" / name)
  records = layout.scan_dataset(tmp_path, channels="cancel")
  assert [(r.split, r.domain, r.label) for r in records] == [
      ("test", None, None), ("test", None, None), ("train", "source", "normal")]
  _wav(tmp_path / "BlowerDustCollector" / "train" / "section_00_source_train_normal_0004_nzl_1_pow_1.wav",
       channels=1)
  with pytest.raises(layout.DatasetError, match=r"normal_0004_nzl_1_pow_1\.wav: 1 channel\(s\), but channel policy"):
    layout.scan_dataset(tmp_path, channels="cancel")


def test_machine_lists():
  assert releases.machines(2026, "dev") == (
      "ToyCar", "ToyCarEmu", "bearingEmu", "fan", "gearboxEmu", "sliderEmu", "valveEmu")
  assert releases.machines(2026, "eval") == ("BlowerDustCollector", "Sander", "SewingMachine", "ToothBrush",
                                              "ToyDrone")
  assert releases.CHANNELS[2026] == 2 and releases.baseline_prefix(2026) == "DCASE2026T2"
  with pytest.raises(KeyError, match="no machine list for DCASE 2019"):
    releases.machines(2019, "dev")
