"""Runs every benchmark and rewrites the tables in BENCHMARKS.md.

Usage:
  python -m benchmarks.run              # full run (a few minutes per benchmark on 2 cores)
  python -m benchmarks.run --quick      # small sizes, for a smoke test
  python -m benchmarks.run --only=knn,beats --output=BENCHMARKS.md

Each `benchmarks/bench_<name>.py` module returns one markdown section from `run(quick)`. Sections are
written between `<!-- bench:<name> -->` markers, so hand-written text (notes, accelerator figures)
outside the markers is kept.
"""

from __future__ import annotations

import importlib
import pathlib
import re
import sys
import time

from absl import app, flags

BENCH_DIR = pathlib.Path(__file__).resolve().parent


def available() -> list[str]:
  """Names of all benchmark modules, `bench_<name>.py` -> `<name>`, sorted."""
  return sorted(p.stem[len("bench_"):] for p in BENCH_DIR.glob("bench_*.py"))


def replace_section(document: str, name: str, section: str) -> str:
  """Puts `section` between the `<!-- bench:name -->` markers, appending them if absent."""
  begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
  block = f"{begin}\n{section.strip()}\n{end}"
  pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
  if pattern.search(document):
    return pattern.sub(lambda _: block, document)
  return document.rstrip() + "\n\n" + block + "\n"


def define_flags() -> None:
  """Defines the runner's flags; only when run as a program, so importing this module defines none."""
  flags.DEFINE_list("only", [], "Benchmark names to run (default: all bench_*.py modules).")
  flags.DEFINE_bool("quick", False, "Small sizes: checks that every benchmark runs.")
  flags.DEFINE_string("output", "BENCHMARKS.md", "Markdown file whose bench sections are rewritten.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  names = flags.FLAGS.only or available()
  unknown = sorted(set(names) - set(available()))
  if unknown:
    sys.exit(f"unknown benchmark(s) {unknown}; available: {available()}")
  output = pathlib.Path(flags.FLAGS.output)
  document = output.read_text() if output.exists() else "# Benchmarks\n"
  total_start = time.perf_counter()
  for name in names:
    start = time.perf_counter()
    print(f"[bench] {name} ...", flush=True)
    section = importlib.import_module(f"benchmarks.bench_{name}").run(quick=flags.FLAGS.quick)
    print(section, flush=True)
    print(f"[bench] {name} took {time.perf_counter() - start:.0f} s", flush=True)
    document = replace_section(document, name, section)
    output.write_text(document)  # after each benchmark, so a long run keeps what it measured
  print(f"[bench] wrote {output} in {time.perf_counter() - total_start:.0f} s")


if __name__ == "__main__":
  define_flags()
  app.run(main)
