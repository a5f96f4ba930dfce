"""The detect CLI's input handling and error paths, on a hand-made detector folder (no training needed).

Scoring with a real exported detector is tested in test_pipeline.py, next to the pipeline run that makes it.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from asd_jax.data import datasets
from asd_jax.data import records
from asd_jax.detector import detect
from asd_jax.detector import detector as detector_lib
from asd_jax.scoring import scorer as scorer_lib
from configs import pipeline_base

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def system_dir(tmp_path_factory):
  """A detector folder for fan section 00 and valve section 01: the log-mel network (no encoder) and a scorer."""
  root = tmp_path_factory.mktemp("detect")
  rng = np.random.default_rng(0)
  train = [records.ClipRecord(path=f"/data/{m}/train/section_{s}_source_train_normal_{i:04d}.wav", machine=m,
                              section=s, split="train", domain="source", label="normal")
           for m, s in (("fan", "00"), ("valve", "01")) for i in range(6)]
  scorer = scorer_lib.fit(rng.normal(size=(len(train), 8)), train, {"smote": False})
  out = root / "det"
  (out / "models" / "m").mkdir(parents=True)
  scorer.save(str(out / "models" / "m" / "scorer.npz"))
  config = pipeline_base.log_mel_config()  # only its data section is read here: 0.5 s clips at 16 kHz
  config.data.clip_seconds = 0.5
  (out / "models" / "m" / "config.json").write_text(config.to_json_best_effort())
  (out / "models" / "m" / "encoders.json").write_text("[]")  # as export writes them for the log-mel network
  np.savez(out / "models" / "m" / "head.npz")
  manifest = {"format": detector_lib.FORMAT, "version": detector_lib.VERSION, "system": "system1",
              "models": [{"key": "m", "name": "M", "layers": "last", "sources": [], "all_layers": False,
                          "num_classes": 1, "weight": 1.0}],
              "weights": {"m": 1.0}, "thresholds": {"fan/00": 1.0, "valve/01": 1.0}, "threshold_method": "gamma",
              "threshold_quantile": 0.9,
              detector_lib.INPUT: detector_lib.input_record(
                  datasets.wav_config(config.data),
                  detector_lib.TrainingFormats({1: len(train)}, {16000: len(train)}, {"PCM_16": len(train)}))}
  (out / detector_lib.MANIFEST).write_text(json.dumps(manifest))
  return out


def _wav(path: pathlib.Path, seconds: float = 0.5) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  soundfile.write(str(path), np.zeros(int(16000 * seconds), np.float32), 16000, subtype="PCM_16")
  return path


def test_detector_lists_its_sections(system_dir):
  det = detector_lib.Detector(str(system_dir))
  assert det.sections == [("fan", "00"), ("valve", "01")]
  assert det.machines == ["fan", "valve"]
  with pytest.raises(ValueError, match=r"no machine type 'pump' section '00'.*fan section 00, valve section 01"):
    det.check_section("pump", "00")


def test_not_a_detector_folder(tmp_path):
  with pytest.raises(detector_lib.DetectorError, match="not a detector folder"):
    detector_lib.Detector(str(tmp_path))


def test_detector_of_another_format_version(system_dir, tmp_path):
  manifest = json.loads((system_dir / detector_lib.MANIFEST).read_text())
  manifest["version"] = 99
  (tmp_path / detector_lib.MANIFEST).write_text(json.dumps(manifest))
  with pytest.raises(detector_lib.DetectorError, match="version 99"):
    detector_lib.Detector(str(tmp_path))


def test_machine_and_section_come_from_the_path_or_the_flags():
  machines = ["fan", "valve"]
  path = "/x/valve/test/section_01_source_test_normal_0003_v1pat_00.wav"
  assert detect.infer_machine_section(path, machines) == ("valve", "01")
  # The nearest folder named like a machine wins; flags override the path.
  assert detect.infer_machine_section("/fan/valve/clip_section_01.wav", machines) == ("valve", "01")
  assert detect.infer_machine_section(path, machines, machine="fan", section="00") == ("fan", "00")
  assert detect.infer_machine_section("/x/section_00_0001.wav", machines, machine="fan") == ("fan", "00")
  with pytest.raises(ValueError, match="cannot tell the machine type.*fan, valve.*--machine"):
    detect.infer_machine_section("/x/test/section_00_0001.wav", machines)
  with pytest.raises(ValueError, match="cannot tell the section.*--section"):
    detect.infer_machine_section("/x/fan/test/recording.wav", machines)
  with pytest.raises(ValueError, match="cannot tell the section"):
    detect.infer_machine_section("/x/fan/test/subsection_001.wav", machines)


def test_dcase_2020_names_give_their_machine_id_as_the_section():
  """2020 had machine ids where later years have sections: dev `normal_id_01_...`, `anomaly_id_01_...`, eval
  `id_01_...`; the pipeline scans them as sections (`data.filenames`), and detect tells them the same way."""
  machines = ["fan", "valve"]
  for name, section in (("normal_id_00_00000000.wav", "00"), ("anomaly_id_02_00000005.wav", "02"),
                        ("id_01_00000012.wav", "01"), ("valve_id_04_by_hand.wav", "04")):
    assert detect.infer_machine_section(f"/x/valve/test/{name}", machines) == ("valve", section), name


def test_folders_expand_to_their_wav_files(tmp_path):
  b = _wav(tmp_path / "fan" / "test" / "b_section_00.wav")
  a = _wav(tmp_path / "fan" / "a_section_00.wav")
  (tmp_path / "fan" / "notes.txt").write_text("x")
  paths, problems = detect.expand_inputs([str(tmp_path / "fan")])
  assert paths == [str(a), str(b)] and problems == []
  (tmp_path / "empty").mkdir()
  paths, problems = detect.expand_inputs([str(tmp_path / "empty"), str(tmp_path / "missing.wav")])
  assert paths == []
  assert problems == [f"{tmp_path / 'empty'}: folder holds no .wav files",
                      f"{tmp_path / 'missing.wav'}: no such file or folder"]


def test_every_bad_input_is_reported_before_scoring(system_dir, tmp_path):
  good = _wav(tmp_path / "fan" / "test" / "section_00_source_test_normal_0000.wav")
  broken = tmp_path / "fan" / "test" / "section_00_source_test_normal_0001.wav"
  broken.write_bytes(b"not a wav file at all")
  wrong_section = _wav(tmp_path / "fan" / "test" / "section_07_source_test_normal_0000.wav")
  no_machine = _wav(tmp_path / "pump" / "test" / "section_00_source_test_normal_0000.wav")
  with pytest.raises(detect.InputError) as info:
    detect.detect(str(system_dir), [str(good), str(broken), str(wrong_section), str(no_machine),
                                    str(tmp_path / "gone.wav")])
  # Missing files are reported first, on their own: nothing else is looked at.
  assert info.value.problems == [f"{tmp_path / 'gone.wav'}: no such file or folder"]
  with pytest.raises(detect.InputError) as info:
    detect.detect(str(system_dir), [str(good), str(broken), str(wrong_section), str(no_machine)])
  problems = info.value.problems
  assert len(problems) == 3
  assert problems[0].startswith(f"{broken}: cannot read as audio")
  assert problems[1].startswith(f"{wrong_section}: the detector knows no machine type 'fan' section '07'")
  assert problems[2].startswith(f"{no_machine}: cannot tell the machine type")


def test_flags_for_an_unknown_machine_type(system_dir, tmp_path):
  clip = _wav(tmp_path / "section_00_0000.wav")
  with pytest.raises(detect.InputError, match="no machine type 'pump' section '00'"):
    detect.detect(str(system_dir), [str(clip)], machine="pump")
  with pytest.raises(detect.InputError, match="no machine type 'valve' section '00'"):
    detect.detect(str(system_dir), [str(clip)], machine="valve")


def test_cli_exits_with_a_message_not_a_traceback(system_dir, tmp_path):
  env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
  broken = tmp_path / "fan" / "section_00_0000.wav"
  broken.parent.mkdir()
  broken.write_bytes(b"RIFF....WAVEjunk")
  proc = subprocess.run([sys.executable, "-m", "asd_jax.detect", f"--detector={system_dir}", str(broken)],
                        cwd=REPO_ROOT, capture_output=True, text=True, env=env)
  assert proc.returncode == 1
  assert "Traceback" not in proc.stderr
  assert f"{broken}: cannot read as audio" in proc.stderr
  proc = subprocess.run([sys.executable, "-m", "asd_jax.detect", f"--detector={tmp_path}", str(broken)],
                        cwd=REPO_ROOT, capture_output=True, text=True, env=env)
  assert proc.returncode == 1 and "not a detector folder" in proc.stderr
  proc = subprocess.run([sys.executable, "-m", "asd_jax.detect", f"--detector={system_dir}"],
                        cwd=REPO_ROOT, capture_output=True, text=True, env=env)
  assert proc.returncode != 0 and "give one or more .wav files or folders" in proc.stderr


def test_serving_a_detector_does_not_import_the_training_package():
  code = ("import sys, asd_jax.detect, asd_jax.detector.detect, asd_jax.detector.detector; "
          "bad = [m for m in sys.modules if m.startswith(('asd_jax.training', 'asd_jax.finetuning', "
          "'asd_jax.pretraining', 'asd_jax.pipeline'))]; "
          "assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT,
                 env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
