"""Benchmarks: every module imports and has the runner's interface; the runner's section rewriting; the
shared helpers; one quick benchmark end to end. Heavy benchmarks are not run here (see `make bench`)."""

import importlib
import inspect
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import common
from benchmarks import device_check
from benchmarks import run as runner
from benchmarks import side_by_side

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_every_bench_module_has_run_with_quick():
  names = runner.available()
  assert {"beats", "eat", "embed", "fbank", "knn", "train"} <= set(names)
  for name in names:
    module = importlib.import_module(f"benchmarks.bench_{name}")
    parameters = inspect.signature(module.run).parameters
    assert list(parameters) == ["quick"] and parameters["quick"].default is False, name


def test_replace_section_appends_replaces_and_keeps_the_rest():
  doc = "# Benchmarks\n\nHand-written notes.\n"
  doc = runner.replace_section(doc, "a", "## A\n| x |\n")
  doc = runner.replace_section(doc, "b", "## B v1")
  assert doc.index("Hand-written notes.") < doc.index("<!-- bench:a -->") < doc.index("<!-- bench:b -->")
  doc = runner.replace_section(doc + "\nTrailing text.\n", "a", "## A v2")
  assert "## A v2" in doc and "| x |" not in doc and doc.count("<!-- bench:a -->") == 1
  assert "## B v1" in doc and doc.rstrip().endswith("Trailing text.")
  # A section whose text looks like a regex replacement template is kept literally.
  assert r"\1 and \g<0>" in runner.replace_section(doc, "b", r"## B \1 and \g<0>")


def test_runner_runs_a_quick_benchmark_and_rewrites_only_its_section(tmp_path):
  """`python -m benchmarks.run --only=fbank --quick` end to end (a few seconds)."""
  output = tmp_path / "BENCHMARKS.md"
  output.write_text("# Benchmarks\n\nNotes.\n\n<!-- bench:fbank -->\nold\n<!-- /bench:fbank -->\n\n"
                    "<!-- bench:knn -->\nkept\n<!-- /bench:knn -->\n")
  result = subprocess.run([sys.executable, "-m", "benchmarks.run", "--only=fbank", "--quick", f"--output={output}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  text = output.read_text()
  assert "old" not in text and "Notes." in text and "kept" in text
  section = text[text.index("<!-- bench:fbank -->"):text.index("<!-- /bench:fbank -->")]
  lines = section.splitlines()
  assert lines[1].startswith("## ") and common.machine_description().split(";")[0] in section
  assert sum(line.startswith(("| JAX", "| librosa")) for line in lines) == 3


def test_helpers():
  table = common.markdown_table(["a", "b"], [[1.23456, "x"], [2, 0.5]])
  assert table.splitlines() == ["| a | b |", "|---|---|", "| 1.23 | x |", "| 2 | 0.5 |"]
  assert "cores" in common.machine_description() and "jax" in common.machine_description()
  calls = []
  median, spread = common.time_call(lambda: calls.append(1), repeats=3, warmup=2)
  assert len(calls) == 5 and median >= 0 and spread >= 0
  compiled, compile_s, median, _ = common.compile_and_time(lambda x: x * 2, jnp.arange(4.0), repeats=2)
  np.testing.assert_array_equal(compiled(jnp.arange(4.0)), [0, 2, 4, 6])
  assert compile_s > 0 and median > 0 and common.xla_memory_bytes(compiled) >= 32


def test_side_by_side_needs_a_real_upstream_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match="expected upstream's BEATs.py"):
    side_by_side.import_upstream_beats(tmp_path)


def test_device_check_peak_table_and_section():
  assert device_check.peak_flops("NVIDIA H100 80GB HBM3") == device_check.peak_flops("NVIDIA H200") == 989e12
  assert device_check.peak_flops("cpu") is None

  class Compiled:
    def cost_analysis(self):
      return {"flops": 2e12}

    def memory_analysis(self):
      return None

  check = device_check.Check(budget_s=100.0, output="", json_path="", smoke=True)
  check.peak, check.repeats = 1e15, 3
  check.add("thing", batch=10, compiled=Compiled(), median=0.5, spread=0.1, compile_s=2.0)
  row = check.rows[0]
  assert row["clips_per_s"] == 20 and row["tflops"] == pytest.approx(4.0) and row["mfu"] == pytest.approx(0.004)
  assert "| thing | 10 | 20.0 | 500.0 | 100.0 | 2.0 | 4.0 | 0.4% |" in check.section()
  def broken(check, size):
    raise RuntimeError(f"RESOURCE_EXHAUSTED: {size} bytes\nmore detail")

  check.guarded("big thing", broken, 123)
  assert check.failures == ["big thing: failed with RuntimeError: RESOURCE_EXHAUSTED: 123 bytes"]
  assert "- big thing: failed with RuntimeError" in check.section()
  check.budget_s = 0.0
  assert not check.has_time("late thing") and "late thing" in check.section()


@pytest.mark.slow
def test_device_check_cpu_smoke_runs(tmp_path):
  result = subprocess.run(["bash", str(REPO / "benchmarks" / "device_check.sh"), "--cpu_smoke",
                           f"--json={tmp_path / 'check.json'}", "--output="], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
  assert result.returncode == 0, result.stderr[-2000:]
  import json
  result = json.loads((tmp_path / "check.json").read_text())
  assert result["failures"] == [] and result["skipped"] == []
  assert len(result["rows"]) == 6 and all(r["clips_per_s"] > 0 for r in result["rows"])
