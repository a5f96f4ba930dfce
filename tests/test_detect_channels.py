"""`detect` and the detector folder against recordings of other channel counts and formats than the training clips.

Two real detector folders, made without training (the non-learned log-mel model, `detector.export`):
  * "mono": DCASE 2023 valve, trained on the two real mono training clips of `tests/real/dcase2023_dev/valve`
    with the default policy `near` (10 s clips), as issue 23 met it with a real DCASE 2023 detector;
  * "pair": trained with `cancel` on two-channel near/far clips made here (1 s, PCM_16).
Against them: the real 8-channel MIMII valve clip of `tests/real/mimii_0dB`, mono clips, and a two-channel file
at another rate and sample format. The rule (`asd_jax.detector.detector`, "Input formats"): a recording the
policy cannot read is an error naming it; a channel count, rate or sample format the training clips did not have
is a warning printed with the scores.

Tolerances: the 8-channel clip read with `near` and its channel 0 written as a mono PCM_16 file are the same
samples, so the same float32 waveform and embedding; the two scores are then the same float64 computation on the
same vector and equal exactly.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from asd_jax.audio import channels as channels_lib
from asd_jax.data import records
from asd_jax.detector import detect
from asd_jax.detector import detector as detector_lib
from asd_jax.detector import export as export_lib
from asd_jax.embedding import extract
from asd_jax.models import networks
from asd_jax.scoring import fusion
from asd_jax.scoring import scorer as scorer_lib
from configs import pipeline_base

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
REAL = REPO_ROOT / "tests" / "real"
DCASE2023 = REAL / "dcase2023_dev"
MIMII_VALVE = REAL / "mimii_0dB" / "valve" / "id_02" / "normal" / "00000000.wav"
RATE = 16_000


def _log_mel(clip_seconds: float, policy: str):
  config = pipeline_base.log_mel_config()
  config.data.clip_seconds = clip_seconds
  config.data.channels = policy
  config.embed.batch_size = 2
  return config


def _exported(key: str, config, train: list[records.ClipRecord]) -> export_lib.ExportedModel:
  network = networks.build_network(config, 1)
  embeddings, _ = extract.embed_records(config, network, {}, train, all_layers=False, progress=False)
  scorer = scorer_lib.fit(embeddings["embedding"], train, {"smote": False})
  return export_lib.ExportedModel(key=key, name=key, layers="last", sources=(), all_layers=False, config=config,
                                  network=network, params={}, num_classes=1, scorer=scorer)


def _export(out: pathlib.Path, models: list[export_lib.ExportedModel], root: pathlib.Path) -> str:
  weights = {m.key: 1.0 / len(models) for m in models}
  return export_lib.export(str(out), system="log-mel", weights=weights, models=models,
                           thresholds=fusion.fit_thresholds(weights, {m.key: m.scorer for m in models}),
                           root=str(root), threshold_method="gamma", threshold_quantile=0.9)


def _pair(rng, seconds: float = 1.0) -> np.ndarray:
  """int16 [samples, 2]: near = a 120 Hz hum + noise, far = the noise 40 samples later, louder, and a weak hum."""
  n = int(seconds * RATE)
  t = np.arange(n) / RATE
  noise = rng.standard_normal(n + 40)
  hum = np.sin(2 * np.pi * 120 * t + rng.uniform(0, 2 * np.pi))
  near = 0.2 * hum + 0.05 * noise[40:]
  far = 0.02 * hum + 0.1 * noise[:n]
  return np.round(np.stack([near, far], axis=1) * 32767 * 0.5).astype(np.int16)


def _mono_train() -> list[records.ClipRecord]:
  return [records.ClipRecord(path=str(p), machine="valve", section="00", split="train", domain="source",
                             label="normal") for p in sorted((DCASE2023 / "valve" / "train").glob("*.wav"))]


@pytest.fixture(scope="module")
def detectors(tmp_path_factory):
  """{"mono": Detector, "pair": Detector, "mono_dir": folder, "pair_dir": folder, "pair_root": its data}."""
  tmp = tmp_path_factory.mktemp("detect_channels")
  mono_dir = _export(tmp / "mono", [_exported("log_mel", _log_mel(10.0, "near"), _mono_train())], DCASE2023)
  rng = np.random.default_rng(0)
  pair_root = tmp / "pair_data"
  (pair_root / "valve" / "train").mkdir(parents=True)
  train = []
  for i in range(6):
    path = pair_root / "valve" / "train" / f"section_00_source_train_normal_{i:04d}.wav"
    soundfile.write(str(path), _pair(rng), RATE, subtype="PCM_16")
    train.append(records.ClipRecord(path=str(path), machine="valve", section="00", split="train", domain="source",
                                    label="normal"))
  pair_dir = _export(tmp / "pair", [_exported("log_mel", _log_mel(1.0, "cancel"), train)], pair_root)
  return {"mono": detector_lib.Detector(mono_dir), "pair": detector_lib.Detector(pair_dir), "mono_dir": mono_dir,
          "pair_dir": pair_dir, "pair_root": pair_root, "rng": rng}


def test_the_detector_records_the_policy_and_the_training_clips_formats(detectors):
  for key, policy, clip_s, counts in (("mono", "near", 10.0, {"1": 2}), ("pair", "cancel", 1.0, {"2": 6})):
    manifest = json.loads((pathlib.Path(detectors[f"{key}_dir"]) / detector_lib.MANIFEST).read_text())
    n = sum(counts.values())
    assert manifest[detector_lib.INPUT] == {
        "channel_policy": policy, "sample_rate": RATE, "clip_seconds": clip_s,
        "training_clips": {"channel_counts": counts, "sample_rates": {"16000": n}, "sample_formats": {"PCM_16": n}}}
    assert detectors[key].wav_config.channels == policy


def test_an_8_channel_mimii_clip_against_a_mono_trained_near_detector_is_scored_on_channel_0_with_a_warning(
    detectors, tmp_path):
  det = detectors["mono"]
  channel_0 = tmp_path / "valve" / "section_00_channel_0.wav"
  channel_0.parent.mkdir()
  samples, rate = soundfile.read(str(MIMII_VALVE), dtype="int16")
  assert samples.shape[1] == 8 and rate == RATE
  soundfile.write(str(channel_0), samples[:, 0], RATE, subtype="PCM_16")
  mimii, alone = detect.detect(det, [str(MIMII_VALVE), str(channel_0)], machine="valve", section="00")
  assert mimii.warning == "8 channel(s) where the training clips had 1 (channel policy 'near' reads its channel 0)"
  assert alone.warning == ""
  assert mimii.score == alone.score  # the same samples: channel 0 is what `near` reads
  text = detect.format_detections([mimii, alone], 10.0, "near")
  assert "read with channel policy 'near'" in text.splitlines()[0]
  assert text.endswith(
      "warning: 1 recording(s) unlike the detector's training clips; their scores may not be comparable with the "
      f"thresholds, which were fitted on those clips:\n  {MIMII_VALVE}: 8 channel(s) where the training clips had 1 "
      "(channel policy 'near' reads its channel 0)")


def test_a_policy_that_cannot_read_the_recording_is_an_error_naming_it(detectors):
  det = detectors["pair"]
  mono = DCASE2023 / "valve" / "test" / "section_00_target_test_normal_0044_pat_03.wav"
  with pytest.raises(detect.InputError) as info:
    detect.detect(det, [str(mono), str(MIMII_VALVE)], machine="valve", section="00")
  assert info.value.problems == [
      f"{path}: {n} channel(s), but this detector reads recordings with channel policy 'cancel', which needs exactly "
      "2 (channel 0 near the machine, channel 1 far); its models were trained on 2-channel clips read that way and "
      "cannot score it" for path, n in ((mono, 1), (MIMII_VALVE, 8))]


def test_another_rate_and_sample_format_are_warned_about(detectors, tmp_path):
  det = detectors["pair"]
  pair = _pair(detectors["rng"], seconds=1.0).astype(np.float64) / 32768
  path = tmp_path / "valve" / "section_00_48k.wav"
  path.parent.mkdir()
  soundfile.write(str(path), np.repeat(pair, 3, axis=0), 3 * RATE, subtype="PCM_24")
  detection, = detect.detect(det, [str(path)])
  assert detection.warning == ("48000 Hz where the training clips had 16000 Hz (resampled to the models' 16000 Hz); "
                               "sample format PCM_24 where the training clips had PCM_16")


def test_mono_recordings_against_a_two_channel_near_detector_are_warned_about(detectors, tmp_path):
  """The other direction: a detector trained on near/far pairs with `near` reads a mono file's one channel."""
  train = [records.ClipRecord(path=str(p), machine="valve", section="00", split="train", domain="source",
                              label="normal")
           for p in sorted((detectors["pair_root"] / "valve" / "train").glob("*.wav"))]
  det = detector_lib.Detector(_export(tmp_path / "det", [_exported("log_mel", _log_mel(1.0, "near"), train)],
                                      detectors["pair_root"]))
  mono = tmp_path / "valve" / "section_00_mono.wav"
  mono.parent.mkdir()
  soundfile.write(str(mono), soundfile.read(train[0].path, dtype="int16")[0][:, 0], RATE, subtype="PCM_16")
  assert det.input_warning(str(mono)) == ("1 channel(s) where the training clips had 2 (channel policy 'near' reads "
                                          "its one channel)")
  assert det.input_warning(train[0].path) == ""


def test_models_that_read_clips_differently_are_not_exported_together(detectors, tmp_path):
  train = _mono_train()
  models = [_exported("near", _log_mel(10.0, "near"), train), _exported("mean", _log_mel(10.0, "mean"), train)]
  with pytest.raises(detector_lib.DetectorError) as info:
    _export(tmp_path / "det", models, DCASE2023)
  assert str(info.value) == (
      "system log-mel: its models read clips differently (near: 16000 Hz, 10 s clips, channel policy 'near'; mean: "
      "16000 Hz, 10 s clips, channel policy 'mean'); one detector reads a recording one way for all its models: one "
      "sample rate, clip length and channel policy")
  assert not (tmp_path / "det").exists()


def test_a_detector_whose_manifest_and_model_configs_disagree_on_the_policy_is_refused(detectors, tmp_path):
  copy = tmp_path / "det"
  shutil.copytree(detectors["pair_dir"], copy)
  config_path = copy / "models" / "log_mel" / "config.json"
  config = json.loads(config_path.read_text())
  config["data"]["channels"] = channels_lib.NEAR
  config_path.write_text(json.dumps(config))
  det = detector_lib.Detector(str(copy))
  with pytest.raises(detector_lib.DetectorError) as info:
    det.read(str(MIMII_VALVE))
  assert str(info.value) == (
      f"{copy / detector_lib.MANIFEST}: says its models read 16000 Hz, 1.0 s clips, channel policy 'cancel', but "
      "their configs read 16000 Hz, 1 s clips, channel policy 'near'; the folder was changed after it was exported: "
      "export it again (re-run the pipeline)")


def test_detect_cli_prints_the_warning_after_the_table(detectors):
  proc = subprocess.run([sys.executable, "-m", "asd_jax.detect", f"--detector={detectors['mono_dir']}",
                         "--machine=valve", "--section=00", str(MIMII_VALVE)], cwd=REPO_ROOT, capture_output=True,
                        text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
  assert proc.returncode == 0, proc.stderr
  assert "read with channel policy 'near'" in proc.stdout
  assert (f"warning: 1 recording(s) unlike the detector's training clips; their scores may not be comparable with the "
          f"thresholds, which were fitted on those clips:\n  {MIMII_VALVE}: 8 channel(s) where the training clips "
          "had 1 (channel policy 'near' reads its channel 0)") in proc.stdout
