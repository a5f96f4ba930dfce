"""matplotlib is an extra: without it asd_jax imports and runs, and the report says what to install."""

import os
import subprocess
import sys

WITHOUT_MATPLOTLIB = """
import runpy, sys
sys.modules["matplotlib"] = None  # any `import matplotlib` now raises ImportError
import asd_jax.report.collect
print("loaded with the workdir reader:", sorted(m for m in ("jax", "matplotlib") if sys.modules.get(m)))
import asd_jax.pipeline, asd_jax.detect, asd_jax.report
sys.argv = ["asd_jax.report", "--workdir=/nonexistent"]
runpy.run_module("asd_jax.report", run_name="__main__")
"""


def test_asd_jax_imports_without_matplotlib_and_the_report_names_the_extra():
  proc = subprocess.run([sys.executable, "-c", WITHOUT_MATPLOTLIB], capture_output=True, text=True,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 1, proc.stderr
  assert proc.stdout.strip() == "loaded with the workdir reader: []"  # the reader needs neither JAX nor plots
  assert proc.stderr.startswith("error: the report needs matplotlib: pip install 'asd_jax[report]'"), proc.stderr
