"""File-name parsing on names from the DCASE Task 2 documentation and evaluators, 2020-2025."""

import pytest

from asd_jax.data import filenames
from asd_jax.data import records as rec

P = filenames.ParsedName

CASES = [
    # 2020 dev / eval (DCASE 2020 Task 2 dataset description).
    ("normal_id_00_00000000.wav", False, P("00", "00000000", None, "source", "normal", "")),
    ("anomaly_id_02_00000005.wav", False, P("02", "00000005", None, "source", "anomaly", "")),
    ("id_01_00000000.wav", False, P("01", "00000000", "test", "source", None, "")),
    # 2021 dev train / test, eval test.
    ("section_00_source_train_normal_0000_strength_1_ambient.wav", False,
     P("00", "0000", "train", "source", "normal", "strength_1_ambient")),
    ("section_01_target_test_anomaly_0003.wav", False,
     P("01", "0003", "test", "target", "anomaly", "")),
    ("section_03_source_test_0000.wav", False, P("03", "0000", "test", "source", None, "")),
    # 2022 dev (one attribute pair per file name), eval.
    ("section_00_source_train_normal_0000_vel_6_loc_A.wav", False,
     P("00", "0000", "train", "source", "normal", "vel_6_loc_A")),
    ("section_03_0000.wav", False, P("03", "0000", "test", None, None, "")),
    # 2023 evaluator ground truth (bandsaw) and 2024/2025 ToyCar names.
    ("section_00_target_test_anomaly_0001_vel_12.wav", False,
     P("00", "0001", "test", "target", "anomaly", "vel_12")),
    ("section_00_source_train_normal_0000_car_A1_spd_28V_mic_1.wav", False,
     P("00", "0000", "train", "source", "normal", "car_A1_spd_28V_mic_1")),
    ("section_00_source_test_normal_0000_car_A2_spd_28V_mic_1_noise_1.wav", False,
     P("00", "0000", "test", "source", "normal", "car_A2_spd_28V_mic_1_noise_1")),
    ("section_00_target_test_anomaly_0001_noAttribute.wav", False,
     P("00", "0001", "test", "target", "anomaly", "noAttribute")),
    ("section_00_source_train_normal_0000_pro_A_vel_12_loc_B.wav", False,
     P("00", "0000", "train", "source", "normal", "pro_A_vel_12_loc_B")),
    # 2025 baseline README layout: empty attribute part, eval names before renaming.
    ("section_00_source_train_normal_0989_.wav", False,
     P("00", "0989", "train", "source", "normal", "")),
    ("section_00_0199.wav", False, P("00", "0199", "test", None, None, "")),
    ("section_00_test_0199.wav", False, P("00", "0199", "test", None, None, "")),
    # 2025 supplementary recordings: the real dev form (machine and noise only), then other forms.
    ("section_00_machine_source_0000_noAttribute.wav", True,
     P("00", "0000", "supplemental", "source", None, "noAttribute", rec.KIND_CLEAN)),
    ("section_00_noise_source_0000_noAttribute.wav", True,
     P("00", "0000", "supplemental", "source", None, "noAttribute", rec.KIND_NOISE)),
    ("section_00_machine_0001_.wav", True,
     P("00", "0001", "supplemental", None, None, "", rec.KIND_CLEAN)),
    ("section_00_source_supplemental_clean_0000_car_A1.wav", True,
     P("00", "0000", "supplemental", "source", None, "car_A1", rec.KIND_CLEAN)),
    ("section_00_source_supplemental_noise_0003_noAttribute.wav", True,
     P("00", "0003", "supplemental", "source", None, "noAttribute", rec.KIND_NOISE)),
    ("section_00_noise_supplemental_normal_0000.wav", True,
     P("00", "0000", "supplemental", None, None, "", rec.KIND_NOISE)),
]


@pytest.mark.parametrize("name,supplemental,expected", CASES, ids=[c[0] for c in CASES])
def test_parse_name(name, supplemental, expected):
  assert filenames.parse_name(name, supplemental=supplemental) == expected


@pytest.mark.parametrize("text,expected", [
    ("", ()),
    ("noAttribute", ()),
    ("car_A1_spd_28V_mic_1", (("car", "A1"), ("spd", "28V"), ("mic", "1"))),
    ("vel_6_loc_A", (("vel", "6"), ("loc", "A"))),
    ("strength_1_ambient", (("strength", "1_ambient"),)),  # 2021 value with an underscore
    ("A1Spd28VMic1", (("attribute", "A1Spd28VMic1"),)),
])
def test_parse_attribute_string(text, expected):
  assert filenames.parse_attribute_string(text) == expected


def test_attribute_string_round_trip():
  for text in ["car_A1_spd_28V_mic_1", "vel_6_loc_A", "strength_1_ambient"]:
    assert filenames.attribute_string(filenames.parse_attribute_string(text)) == text
  assert filenames.attribute_string(()) == "noAttribute"


@pytest.mark.parametrize("name,supplemental", [
    ("section_00_source_train_broken_0000_a_b.wav", False),
    ("section_0_source_train_normal_0000.wav", False),
    ("fan_recording.wav", False),
    ("section_00_source_train_normal_0000.flac", False),
    ("section_00_source_supplemental_0000.wav", True),  # neither clean nor noise
    ("other_0000.wav", True),
])
def test_unparseable_names_raise_naming_the_file(name, supplemental):
  with pytest.raises(filenames.FileNameError, match=name.split(".")[0]):
    filenames.parse_name(name, supplemental=supplemental)


@pytest.mark.parametrize("name,section", [
    ("section_03_source_test_0000.wav", "03"), ("section_00_0000.wav", "00"), ("normal_id_02_00000000.wav", "02"),
    ("id_06_00000001.wav", "06"), ("pump_section_01_take2.wav", "01"), ("hall_id_04.wav", "04"),
    ("recording.wav", None), ("subsection_001.wav", None), ("section_1_x.wav", None)])
def test_section_of_a_recording_name(name, section):
  assert filenames.section_of(name) == section
