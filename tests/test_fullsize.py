"""The report's System 1 at full size on the 28 real DCASE 2023 clips, as a user runs it (issue 23's done criterion).

`python -m asd_jax.pipeline --config=configs/system1.py` with random weights asked for by name (no checkpoint can be
downloaded here), one epoch and batch 2 for every model at once, then `python -m asd_jax.report`. Every output is
written; the seven sections, which have two test clips each and can never be evaluated under the 2023 rules, and
their two training clips each, are warned about before any compute; the first lines state every encoder's starting
weights. Slow: BEATs and EAT-large training and embedding on 2 CPU cores (`make test-slow`). It prints its wall time
and the peak memory of the pipeline process (BENCHMARKS.md records a run).
"""

import json
import os
import pathlib
import resource
import subprocess
import sys
import time

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO_ROOT / "tests" / "real" / "dcase2023_dev"
MACHINES = ("ToyCar", "ToyTrain", "bearing", "fan", "gearbox", "slider", "valve")
# Every encoder of every model of System 1's config, in model order, as the run's first lines name them.
ENCODERS = [("FBEATs", "BEATs"), ("LBEATs", "BEATs"), ("FEAT", "EAT"), ("LEAT", "EAT"), ("Dual-Branch", "BEATs"),
            ("Dual-Branch", "EAT"), ("BEATs (frozen)", "BEATs"), ("EAT (frozen)", "EAT")]


def _run(*args):
  start = time.perf_counter()
  proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
  return proc, time.perf_counter() - start


@pytest.mark.slow
def test_system1_at_full_size_on_the_real_clips_writes_every_output(tmp_path):
  workdir = tmp_path / "work"
  proc, seconds = _run("asd_jax.pipeline", "--config=configs/system1.py", f"--workdir={workdir}",
                       f"--config.data.root={DATA}", "--config.init.random_weights=beats,eat",
                       "--config.train_all.epochs=1", "--config.train_all.batch_size=2", "--nobars")
  peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
  print(f"\nsystem1 full size on {DATA.name}: {seconds / 60:.1f} min, peak memory {peak_gib:.1f} GiB")
  assert proc.returncode == 0, proc.stderr[-3000:]
  # Up front, before any compute: the sections that cannot be evaluated and the thin normalisation, once each.
  warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
  for machine in MACHINES:
    assert sum(line.startswith(f"warning: {machine} section 00: not evaluated: ") for line in warnings) == 1
    assert sum(line.startswith(f"warning: {machine} section 00: the score normalisation") for line in warnings) == 1
  # The first lines: the models, then every encoder's starting weights.
  lines = proc.stdout.splitlines()
  assert "] setup " in lines[0] and "9 models" in lines[0]
  stated = [line.split("] weights ", 1)[1] for line in lines[1:1 + len(ENCODERS)]]
  assert stated == [f"{model}: {encoder} from random weights (seed 0; init.random_weights=beats,eat)"
                    for model, encoder in ENCODERS]
  provenance = json.loads((workdir / "provenance.json").read_text())
  assert provenance["weights"]["dual_branch"] == {
      "beats": {"source": "random", "seed": 0, "why": "init.random_weights=beats,eat"},
      "eat": {"source": "random", "seed": 0, "why": "init.random_weights=beats,eat"}}
  for system in ("system1", "system2", "system3", "system4"):
    assert len(os.listdir(workdir / "submissions" / system)) == 2 * len(MACHINES), system
  assert (workdir / "detector" / "detector.json").is_file()
  results = json.loads((workdir / "results.json").read_text())
  assert not results["labelled"] and results["protocol"] == "2022-2026"
  assert "(no section can be evaluated" in (workdir / "tables.md").read_text()
  report, report_s = _run("asd_jax.report", f"--workdir={workdir}")
  print(f"report: {report_s:.0f} s")
  assert report.returncode == 0, report.stderr[-3000:]
  assert (workdir / "report" / "index.html").is_file()
  # The same submissions under the 2020 rules (no domains): the machine types whose two test clips are one normal and
  # one anomalous clip are evaluated.
  evaluated, _ = _run("asd_jax.evaluate", f"--scores={workdir / 'submissions' / 'system1'}", f"--dataset={DATA}",
                      "--year=2020", f"--json={tmp_path / 'r.json'}")
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert json.loads((tmp_path / "r.json").read_text())["n_evaluated"] == 5
