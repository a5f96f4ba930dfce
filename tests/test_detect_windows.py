"""`detect` on recordings longer (and shorter) than the model's clip: windows, the recording score, the peak time.

A real detector folder, made without training: the non-learned log-mel mean/std model (no parameters) with
1 s clips, its scorer fitted on twelve normal 1 s clips (noise and a 120 Hz hum, as a machine), exported by
`detector.export`. A long recording of normal windows with one tone burst in it must peak at the burst.

Tolerances come from the computation. A window cut out of the recording (PCM_16 in, PCM_16 out: the same
samples) is the same float32 waveform as the window the detector cuts itself, and on CPU every clip runs alone
through the same compiled forward (`embedding.extract`), so the embeddings are equal bit for bit (asserted).
From equal embeddings the scores are float64 sums that may run in another order (other row counts): a cosine
distance of D terms moves by at most 2 gamma_D (gamma_D = D u / (1 - D u), u = 2^-53), a normalised (and, with
weight 1, fused) score by that over the section's std.
"""

import logging
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from asd_jax.audio import windows as windows_lib
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
RATE = 16_000
CLIP_S = 1.0
U64 = 2.0**-53


def _machine(rng, seconds: float, burst: tuple[float, float] | None = None) -> np.ndarray:
  """int16 [samples]: noise and a 120 Hz hum; with `burst` (start, end) in seconds, a loud 3 kHz tone there."""
  t = np.arange(int(round(seconds * RATE))) / RATE
  x = 0.05 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * 120 * t + rng.uniform(0, 2 * np.pi))
  if burst:
    on = (t >= burst[0]) & (t < burst[1])
    x[on] += 0.5 * np.sin(2 * np.pi * 3000 * t[on])
  return np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)


def _write(path: pathlib.Path, samples: np.ndarray) -> str:
  path.parent.mkdir(parents=True, exist_ok=True)
  soundfile.write(str(path), samples, RATE, subtype="PCM_16")
  return str(path)


def _log_mel_detector(out: pathlib.Path, train: list[records.ClipRecord], root: pathlib.Path) -> str:
  """A detector folder of the log-mel model (1 s clips), its scorer fitted on `train` (under `root`)."""
  config = pipeline_base.log_mel_config()
  config.data.clip_seconds = CLIP_S
  config.embed.batch_size = 4
  network = networks.build_network(config, 1)
  embeddings, _ = extract.embed_records(config, network, {}, train, all_layers=False, progress=False)
  scorer = scorer_lib.fit(embeddings["embedding"], train, {"smote": False})
  weights = {"log_mel": 1.0}
  model = export_lib.ExportedModel(key="log_mel", name="log-mel", layers="last", sources=(), all_layers=False,
                                   config=config, network=network, params={}, num_classes=1, scorer=scorer)
  return export_lib.export(str(out), system="log-mel", weights=weights, models=[model],
                           thresholds=fusion.fit_thresholds(weights, {"log_mel": scorer}), root=str(root),
                           threshold_method="gamma", threshold_quantile=0.9)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
  """(loaded Detector, its folder, folder for recordings, rng)."""
  root = tmp_path_factory.mktemp("windows")
  rng = np.random.default_rng(0)
  train_dir = root / "data" / "fan" / "train"
  train = [records.ClipRecord(path=_write(train_dir / f"section_00_source_train_normal_{i:04d}.wav",
                                          _machine(rng, CLIP_S)),
                              machine="fan", section="00", split="train", domain="source", label="normal")
           for i in range(12)]
  out = _log_mel_detector(root / "detector", train, root / "data")
  return detector_lib.Detector(out), out, root / "new" / "fan" / "test", rng


def test_dcase_2020_named_clips_made_by_synth_past_are_scored_in_their_machine_id_section(tmp_path):
  """2020's names carry the section as the machine id (dev `normal_id_01_00000000.wav`, eval `id_01_...`): detect
  reads it through `data.filenames`, as the pipeline's dataset scan does, and scores each clip in that section."""
  from asd_jax.data import synth_past  # pylint: disable=import-outside-toplevel

  synth_past.generate(tmp_path / "past", seed=3, duration=CLIP_S, train=6, machines=["pump"])
  root = tmp_path / "past" / "dcase2020"
  machine_id = lambda p: re.fullmatch(r"(?:normal_|anomaly_)?id_(\d\d)_\d{8}\.wav", p.name).group(1)  # noqa: E731
  train = [records.ClipRecord(path=str(p), machine="pump", section=machine_id(p), split="train", domain="source",
                              label="normal") for p in sorted((root / "pump" / "train").glob("*.wav"))]
  assert len({r.section for r in train}) == 2  # two machine ids, as in the real 2020 sets
  det = detector_lib.Detector(_log_mel_detector(tmp_path / "detector", train, root))
  test = sorted((root / "pump" / "test").glob("*.wav"))
  evaluation_named = tmp_path / "eval" / "pump" / "test" / f"id_{machine_id(test[-1])}_00000000.wav"  # 2020 eval
  evaluation_named.parent.mkdir(parents=True)
  evaluation_named.write_bytes(test[-1].read_bytes())
  detections = detect.detect(det, [str(root / "pump" / "test"), str(evaluation_named)])
  assert [(d.machine, d.section) for d in detections] == [("pump", machine_id(p)) for p in [*test, evaluation_named]]
  assert detections[-1].score == detections[-2].score  # the same recording under its evaluation-set name


def _bound(det, score: float) -> float:
  state = det.scorers["log_mel"].sections[("fan", "00")]
  d = state.bank.shape[1]
  return 2 * (d * U64 / (1 - d * U64)) / state.std + 4 * U64 * abs(score)


def test_split_cuts_consecutive_windows_and_pads_or_drops_the_tail():
  wav = np.arange(25, dtype=np.float32) + 1
  w = windows_lib.split(wav, 10, 10)  # a tail of 5 samples: half a clip, kept and repeat-padded
  np.testing.assert_array_equal(w.starts_s, [0.0, 1.0, 2.0])
  np.testing.assert_array_equal(w.lengths_s, [1.0, 1.0, 0.5])
  np.testing.assert_array_equal(w.wavs[1], wav[10:20])
  np.testing.assert_array_equal(w.wavs[2], np.tile(wav[20:], 2))
  assert w.dropped_s == 0.0
  w = windows_lib.split(wav[:24], 10, 10)  # a tail of 4 samples: under half, dropped
  np.testing.assert_array_equal(w.starts_s, [0.0, 1.0])
  assert w.dropped_s == pytest.approx(0.4)
  w = windows_lib.split(wav[:3], 10, 10)  # shorter than a clip: one padded window (the caller warns)
  np.testing.assert_array_equal(w.wavs, [np.tile(wav[:3], 4)[:10]])
  assert w.lengths_s.tolist() == [0.3]


def test_a_tone_burst_in_a_long_recording_is_found_and_windows_score_as_separate_clips(made):
  det, _, new, rng = made
  burst_window = 3
  samples = np.concatenate([_machine(rng, CLIP_S, (0.2, 0.8) if i == burst_window else None) for i in range(6)]
                           + [_machine(rng, 0.6)])  # six clips and a 0.6 s tail (kept, padded)
  long = _write(new / "section_00_long.wav", samples)
  detection, = detect.detect(det, [long])
  assert [w.start_s for w in detection.windows] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
  assert [w.length_s for w in detection.windows] == [1.0] * 6 + [pytest.approx(0.6)]
  assert detection.peak_s == 3.0 and detection.dropped_s == 0.0
  scores = np.array([w.score for w in detection.windows])
  assert detection.score == scores.max() == scores[burst_window]
  assert detection.decision == 1 == detection.windows[burst_window].decision
  # The burst is far out, not a near tie: above the threshold and every normal window by a wide margin.
  others = np.delete(scores, burst_window)
  assert scores[burst_window] > detection.threshold and scores[burst_window] > others.max() + 5 * others.std()

  # The same windows cut out and scored as clips of their own, in one call.
  n = int(CLIP_S * RATE)
  cuts = [_write(new / f"section_00_cut_{i}.wav", samples[i * n:(i + 1) * n]) for i in range(7)]
  alone = detect.detect(det, cuts)
  assert all(len(d.windows) == 1 for d in alone)
  for i, (w, d) in enumerate(zip(detection.windows, alone)):
    assert abs(w.score - d.score) <= _bound(det, d.score), i
    assert w.nearest_train_clip == d.nearest_train_clip
  # Behind that: the detector's windows are the pipeline's clips, bit for bit (the file path of the pipeline,
  # `Embedder(records)`, on the cut files; the tail file is padded by the front end itself).
  windows = det.read(long)
  cut_records = [records.ClipRecord(path=p, machine="fan", section="00", split="test") for p in cuts]
  np.testing.assert_array_equal(det.waveform_embeddings(windows.wavs)["log_mel"]["embedding"],
                                det.embeddings(cut_records)["log_mel"]["embedding"])


def test_a_short_tail_is_dropped_and_said(made):
  det, _, new, rng = made
  path = _write(new / "section_00_tail.wav", np.concatenate([_machine(rng, 2 * CLIP_S), _machine(rng, 0.3)]))
  detection, = detect.detect(det, [path])
  assert [w.start_s for w in detection.windows] == [0.0, 1.0] and detection.dropped_s == pytest.approx(0.3)
  text = detect.format_detections([detection], CLIP_S)
  assert "maximum over each recording's windows of 1 s" in text
  assert f"{path}: 2 windows; the last 0.30 s is in no window" in text


def test_a_clip_longer_than_one_window_says_in_the_table_that_its_end_was_dropped(made):
  """A 12 s clip before a 10 s model loses its last 2 s; here a 1.3 s recording before the 1 s model its last 0.3 s,
  in one window: the printed table says so, not only the CSV."""
  det, _, new, rng = made
  path = _write(new / "section_00_long_clip.wav", _machine(rng, 1.3 * CLIP_S))
  detection, = detect.detect(det, [path])
  assert len(detection.windows) == 1 and detection.dropped_s == pytest.approx(0.3)
  header, row = detect.format_detections([detection], CLIP_S).splitlines()[1:3]
  assert header.split()[:11] == ["file", "machine", "section", "score", "threshold", "decision", "windows", "peak",
                                 "(s)", "dropped", "(s)"]
  assert row.split()[1:9] == ["fan", "00", f"{detection.score:.4g}", f"{detection.threshold:.4g}",
                              "anomalous" if detection.decision else "normal", "1", "0.00", "0.30"]
  assert ("dropped: 1 recording(s) end in a part shorter than half a window of 1 s, which is in no window and was "
          "not scored") in detect.format_detections([detection], CLIP_S)
  assert "dropped:" not in detect.format_detections([detect.detect(det, [_write(new / "section_00_one.wav",
                                                                                _machine(rng, CLIP_S))])[0]])


def test_scores_and_thresholds_print_with_four_significant_digits_not_rounded_to_zero():
  """Scores normalised on two training clips reach +-1e4, and a tiny threshold printed with four decimals was
  "0.0000" (issue 23): the table keeps four significant digits of any magnitude."""
  d = detector_lib.Detection(path="a.wav", machine="fan", section="00", score=-12345.678, decision=0,
                             threshold=4.2e-5, nearest_train_clip="t.wav", model_scores={})
  row = detect.format_detections([d]).splitlines()[2].split()
  assert row[3:5] == ["-1.235e+04", "4.2e-05"]


def test_detect_warns_when_a_section_is_normalised_on_few_training_clips(tmp_path, capsys):
  rng = np.random.default_rng(3)
  train = [records.ClipRecord(path=_write(tmp_path / "data" / "fan" / "train" /
                                          f"section_00_source_train_normal_{i:04d}.wav", _machine(rng, CLIP_S)),
                              machine="fan", section="00", split="train", domain="source", label="normal")
           for i in range(3)]
  out = _log_mel_detector(tmp_path / "detector", train, tmp_path / "data")
  clip = _write(tmp_path / "new" / "fan" / "test" / "section_00_0000.wav", _machine(rng, CLIP_S))
  detect.run(out, [clip])
  err = capsys.readouterr().err
  assert err.count("warning: fan section 00: the score normalisation") == 1
  assert "rests on 3 normal training clip(s), fewer than 10" in err


def test_short_recordings_warn_and_too_short_ones_are_errors_naming_them(made, caplog):
  det, _, new, rng = made
  short = _write(new / "section_00_short.wav", _machine(rng, 0.3))  # under half a clip: padded, a warning
  with caplog.at_level(logging.WARNING):
    detection, = detect.detect(det, [short])
  assert len(detection.windows) == 1
  assert any(short in r.getMessage() and "less than half the 1 s clip length" in r.getMessage()
             for r in caplog.records), [r.getMessage() for r in caplog.records]
  tiny = _write(new / "section_00_tiny.wav", _machine(rng, 0.05))  # under a tenth: an error
  with pytest.raises(detect.InputError) as info:
    detect.detect(det, [short, tiny])
  assert info.value.problems == [f"{tiny}: 0.05 s long, less than 0.1 of the 1 s clip length: padded, it would be "
                                 "90 % padding (a truncated or damaged recording?)"]


def _detect_cli(out, *args):
  return subprocess.run([sys.executable, "-m", "asd_jax.detect", f"--detector={out}", *args], cwd=REPO_ROOT,
                        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def test_cli_exits_1_naming_a_too_short_file_and_scores_nothing(made):
  _, out, new, rng = made
  fine = _write(new / "section_00_cli_fine.wav", _machine(rng, CLIP_S))
  tiny = _write(new / "section_00_cli_tiny.wav", _machine(rng, 0.02))
  proc = _detect_cli(out, fine, tiny)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert f"{tiny}: 0.02 s long, less than 0.1 of the 1 s clip length" in proc.stderr
  assert proc.stdout == ""  # nothing scored: every input is checked first


@pytest.mark.slow
def test_cli_writes_every_windows_score_and_the_recordings_peak(made, tmp_path):
  _, out, new, rng = made
  long = _write(new / "section_00_cli.wav", np.concatenate([_machine(rng, CLIP_S), _machine(rng, CLIP_S, (0, 1))]))
  windows_csv = tmp_path / "windows.csv"
  proc = _detect_cli(out, f"--windows_output={windows_csv}", f"--output={tmp_path / 'scores.csv'}", long)
  assert proc.returncode == 0, proc.stderr
  assert f"{long}: 2 windows" in proc.stdout and "maximum over each recording's windows of 1 s" in proc.stdout
  rows = [line.split(",") for line in windows_csv.read_text().splitlines()]
  assert rows[0][3:6] == ["window", "start_s", "length_s"] and [r[4] for r in rows[1:]] == ["0.0", "1.0"]
  recording = (tmp_path / "scores.csv").read_text().splitlines()[1].split(",")
  assert float(recording[3]) == max(float(r[6]) for r in rows[1:]) and recording[8] == "1.0"  # peak at 1 s


def test_plot_dir_draws_from_the_detector_that_scored(made, tmp_path, monkeypatch, capsys):
  histograms = pytest.importorskip("asd_jax.report.histograms")  # the [report] extra
  _, out, new, rng = made
  clip = _write(new / "section_00_plot.wav", _machine(rng, CLIP_S))
  loads, fits = [], []
  real_init, real_train = detector_lib.Detector.__init__, fusion.fused_train_scores
  monkeypatch.setattr(detector_lib.Detector, "__init__", lambda self, d: loads.append(d) or real_init(self, d))
  monkeypatch.setattr(fusion, "fused_train_scores", lambda *a, **k: fits.append(1) or real_train(*a, **k))
  detector, detections = detect.run(str(out), [clip])  # what `detect --plot_dir` runs: the scores, then the figures
  paths = histograms.write_detect_figures(detector, detections, str(tmp_path / "plots"))
  assert len(loads) == 1 and len(fits) == 1  # one load; the training scores summed once, when it loaded
  assert [p.name for p in (tmp_path / "plots").iterdir()] == ["scores_fan_section_00.png"]
  assert paths == [str(tmp_path / "plots" / "scores_fan_section_00.png")]
  assert f"{clip}" in capsys.readouterr().out and len(detections) == 1
