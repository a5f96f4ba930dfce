"""Writes the report of a pipeline workdir: `DIR/report/figures/*.png` and `DIR/report/index.html`.

`write_report(workdir)` collects what it shows from the workdir (`report.collect`), draws per (machine, section)
the ROC curves of every model and fused system (`report.roc`) and their score histograms (`report.histograms`),
per model an
embedding map of all its sections (`report.embedding_map`; with `section_maps`, also one per model and section),
per `metrics.jsonl` the training curves (`report.curves`),
and assembles one self-contained page (`report.html`) with the pipeline's tables, the per-section metrics
the ROC legends show, the run's config, versions and wall time. The metric values are computed by
`asd_jax.evaluation.metrics` (through `roc.roc_set`) and checked against `results.json`; a difference is
reported at the top of the page.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import contextlib
import dataclasses
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from asd_jax import atomic
from asd_jax import provenance as provenance_lib
from asd_jax.pipeline import specs as specs_lib
from asd_jax.pipeline import workdir as workdir_lib
from asd_jax.report import collect
from asd_jax.report import curves
from asd_jax.report import embedding_map
from asd_jax.report import histograms
from asd_jax.report import html
from asd_jax.report import roc
from asd_jax.report import style

FIGURES_DIR = "figures"
_DOMAIN_NAMES = {0: "source", 1: "target"}
# Recomputed metrics must equal results.json's: the same function on the same float64 scores. The tolerance
# only absorbs a JSON round trip, which `repr` makes exact; anything larger means stale files.
_RESULTS_TOLERANCE = 1e-12


@dataclasses.dataclass
class Report:
  """What `write_report` wrote: the page, the figure files (absolute), and the metrics shown."""

  index: str
  figures: list[str]
  metrics: dict[tuple[str, str, str], dict[str, float]]  # (scorer key, machine, section) -> values
  notes: list[str]
  seconds: float


def _slug(*parts: str) -> str:
  return "_".join("".join(c if c.isalnum() or c in "-." else "-" for c in p) for p in parts if p)


class _Figures:
  """Saves figures under `figures/` and keeps their bytes for embedding in the page."""

  def __init__(self, out_dir: str):
    self.dir = os.path.join(out_dir, FIGURES_DIR)
    os.makedirs(self.dir, exist_ok=True)
    self.paths: list[str] = []

  def remove_stale(self) -> None:
    """Deletes the PNGs of an earlier report that this one did not write (e.g. a model no longer run)."""
    for name in os.listdir(self.dir):
      path = os.path.join(self.dir, name)
      if name.endswith(".png") and path not in self.paths:
        os.unlink(path)

  def add(self, fig, name: str, alt: str, caption: str = "") -> html.Image:
    png = style.png_bytes(fig)
    path = os.path.join(self.dir, name + ".png")
    atomic.write_bytes(path, png)
    self.paths.append(path)
    return html.Image(png=png, alt=alt, caption=caption, file=f"{FIGURES_DIR}/{name}.png")


def _check_against_results(wd: collect.Collected, key: str, kind: str, section: roc.RocSet,
                           notes: list[str]) -> None:
  entry = wd.results.get("models" if kind == collect.MODEL else "systems", {}).get(key, {})
  evaluation = entry.get("evaluation") or {}
  saved = next((s for s in evaluation.get("sections", []) if (s["machine"], s["section"])
                == (section.section.machine, section.section.section)), None)
  if saved is None:
    return
  for field in section.values:
    if saved.get(field) is None or abs(saved[field] - getattr(section.section, field)) > _RESULTS_TOLERANCE:
      notes.append(f"{key} {section.section.machine} section {section.section.section}: {field} recomputed from "
                   f"scores/ is {getattr(section.section, field)!r}, results.json has {saved[field]!r} "
                   "(stale files?)")


def _histogram_rows(wd: collect.Collected, s: collect.SectionData) -> list[histograms.ScorerHistograms]:
  """One row per scorer; one panel per domain, or one of all clips where a test clip's domain is unknown (an
  evaluation set) or the year has none (2020)."""
  known = s.test_domains >= 0
  domains = [d for d in (0, 1) if np.any(s.test_domains == d) or np.any(s.train_domains == d)] if known.all() \
      else [None]
  rows = []
  for scorer in wd.scorers:
    panels = {}
    for d in domains:
      test = np.ones(len(s.test_domains), bool) if d is None else s.test_domains == d
      train = np.ones(len(s.train_domains), bool) if d is None else s.train_domains == d
      panels["all clips" if d is None else _DOMAIN_NAMES[d]] = histograms.DomainScores(
          train_scores=s.train_scores[scorer.key][train], test_scores=s.test_scores[scorer.key][test],
          test_labels=s.test_labels[test])
    rows.append(histograms.ScorerHistograms(name=scorer.name, threshold=s.thresholds[scorer.key], domains=panels))
  return rows


def _metrics_tables(wd: collect.Collected, values: dict[tuple[str, str, str], dict[str, float]]) -> str:
  """One table per metric of the year's protocol (2022+: AUC source, AUC target, pAUC): a row per model or system,
  a column per section that could be evaluated."""
  sections = [(s.machine, s.section) for s in wd.sections
              if any((key, s.machine, s.section) in values for key in (c.key for c in wd.scorers))]
  if not sections:
    return "<p>No section could be evaluated (see the notes above).</p>"
  out = []
  for title, field in roc.VALUES[wd.protocol]:
    rows = []
    for scorer in wd.scorers:
      rows.append([scorer.name] + [html.metric_cell(values.get((scorer.key, m, sec), {}).get(field), scorer=scorer.key,
                                                    machine=m, section=sec, metric=field) for m, sec in sections])
    out.append(f"<h4>{title} (%)</h4>" + html.table(["model / system"] + [wd.protocol.unit_name(m, sec)
                                                                          for m, sec in sections], rows))
  return "".join(out)


ENCODER_NAMES = {"beats": "BEATs", "eat": "EAT"}


def starting_weights_rows(weights: dict[str, Any], names: dict[str, str]) -> list[tuple[str, str, str]]:
  """(model, encoder, starting weights) per encoder of provenance.json's "weights" ({model key: {encoder:
  {"source", "path", "sha256"} or {"source", "seed", "why"}}}, and "pretraining"), in its order; `names`: model
  key -> table name."""
  def said(start: dict[str, Any]) -> str:
    if start.get("source") == specs_lib.RANDOM:
      return f"random weights (seed {start.get('seed')}; {start.get('why')})"
    digest = f" ({start['sha256']})" if start.get("sha256") else ""
    return f"{start.get('source')} {start.get('path')}{digest}"

  rows = []
  for key, encoders in weights.items():
    if key == "pretraining":
      rows.append(("EAT pre-training", "EAT", said(encoders)))
      continue
    for encoder, start in encoders.items():
      rows.append((names.get(key, key), ENCODER_NAMES.get(encoder, encoder), said(start)))
  return rows


def _health_warnings(wd: collect.Collected) -> str:
  """The pipeline's training-health warnings (results.json "warnings", `asd_jax.pipeline.stages`) as a list, or
  "" when it gave none."""
  warnings = wd.results.get("warnings") or []
  if not warnings:
    return ""
  return ("<div class=note><p><b>Training health: the pipeline warned</b></p><ul>"
          + "".join(f"<li>{html.esc(w)}</li>" for w in warnings) + "</ul></div>")


def _provenance_section(wd: collect.Collected) -> str:
  info = wd.provenance
  if info is None:
    return (f"<p class=note>This workdir has no {workdir_lib.PROVENANCE} (written by the pipeline): the config, "
            "versions and wall time of the invocation that wrote it are unknown. The report was made with these "
            "versions:</p>" + html.key_values(provenance_lib.package_versions()))
  invocations = info.get("invocations", [info])  # a version-1 file: its one invocation
  interrupted = sum(entry.get("finished") is None for entry in invocations[:-1])
  times = {"started (UTC)": info.get("started"), "finished (UTC)": info.get("finished"),
           "wall time of this invocation (s)": f"{info.get('wall_s', 0.0):.1f}",
           **{f"  {k} (s)": f"{v:.1f}" for k, v in info.get("stage_s", {}).items()},
           f"wall time of all {len(invocations)} invocation(s) on this workdir (s)":
               f"{info.get('total_wall_s', info.get('wall_s', 0.0)):.1f}"
               + (f" ({interrupted} interrupted, counted up to their last progress line)" if interrupted else ""),
           "platform": info.get("platform"), "devices": info.get("devices")}
  actions = wd.results.get("actions", {})
  action_rows = [(key, ", ".join(f"{stage}: {what}" for stage, what in a.items()) or "scored only")
                 for key, a in actions.items()]
  weights = info.get("weights")
  names = {m.key: m.name for m in wd.models}
  starts = ("<h3>Starting weights</h3><p>Where every encoder of every model started from: a checkpoint (path and "
            "digest), the pipeline's pre-training export, or random weights, and the setting that asked for "
            "them.</p>" + html.table(["model", "encoder", "started from"], starting_weights_rows(weights, names))
            if weights else f"<p class=note>{workdir_lib.PROVENANCE} does not say which weights the encoders "
            "started from (written by an older version).</p>")
  return (starts + "<h3>Wall time</h3>" + html.key_values(times)
          + "<p>Stages that reused a trained model or its embeddings say <em>cached</em>; their time is that of "
          "this invocation only (each model's training log is under Training curves).</p>"
          + html.table(["model", "stages"], action_rows)
          + "<h3>Versions</h3>" + html.key_values(info.get("versions", {}))
          + "<h3>Config</h3>" + html.details("pipeline config (JSON)", html.preformatted(info.get("config", {}))))


def _map_points(points: dict[tuple[str, str], collect.MapArrays]) -> embedding_map.MapPoints:
  """The points of the given sections in one `MapPoints` (each point's section in `section`)."""
  arrays = list(points.values())
  cat = lambda name: np.concatenate([getattr(a, name) for a in arrays])  # noqa: E731
  return embedding_map.MapPoints(
      cat("vectors"), cat("role"), cat("domain"), cat("label"), cat("attribute_class"),
      section=np.concatenate([np.full(len(a.role), f"{m} {s}", dtype=object) for (m, s), a in points.items()]))


@dataclasses.dataclass(frozen=True)
class _MapJob:
  """One embedding map to draw: its model, where (title), figure name, the subsampled points, their total."""

  model: collect.ScorerInfo
  where: str
  name: str
  points: embedding_map.MapPoints
  total: int
  section: tuple[str, str] | None  # None: the model's map of all sections


def _map_jobs(wd: collect.Collected, max_points: int, seed: int, section_maps: bool,
              notes: list[str]) -> list[_MapJob]:
  """Per model with embeddings, its map of all sections (with `section_maps`, also one per section)."""
  jobs = []
  for model in wd.models:
    if not collect.has_embeddings(wd, model.key):
      notes.append(f"{model.name}: no embeddings in the workdir; no embedding map")
      continue
    points = collect.embedding_points(wd, model.key)
    several = len(points) > 1
    chosen = [(None, "all sections" if several else "{} section {}".format(*next(iter(points))), points)]
    if section_maps and several:
      chosen += [(key, f"{key[0]} section {key[1]}", {key: arrays}) for key, arrays in points.items()]
    for key, where, sections in chosen:
      mp = _map_points(sections)
      kept = embedding_map.subsample(embedding_map.groups(mp), max_points, seed)
      if len(kept) < 4:
        notes.append(f"{model.name} {where}: fewer than 4 points, no embedding map")
        continue
      jobs.append(_MapJob(model=model, where=where, name=_slug("embedding", model.key, *(key or ())),
                          points=mp.take(kept), total=len(mp.role), section=key))
  return jobs


def _projection(future: concurrent.futures.Future | None, job: _MapJob, seed: int) -> np.ndarray:
  """The t-SNE coordinates of `job`: from the worker process, or computed here without one (or if it died)."""
  if future is not None:
    try:
      return future.result()
    except concurrent.futures.process.BrokenProcessPool:
      pass
  return embedding_map.project(job.points.vectors, seed=seed)


def _draw_map(figures: "_Figures", job: _MapJob, xy: np.ndarray, max_points: int, seed: int) -> str:
  """The HTML figure of one embedding map from its t-SNE coordinates `xy` [n, 2]."""
  n = len(job.points.role)
  shown = f"{n} of {job.total} points" if n < job.total else f"all {n} points"
  return html.figure(figures.add(
      embedding_map.embedding_figure(f"{job.model.name}, {job.where}", xy, job.points,
                                     note=f"t-SNE of the scorer's vectors, {shown}"),
      job.name, f"embedding map {job.model.name} {job.where}",
      f"t-SNE (scikit-learn, seed {seed}) of {job.model.name}'s memory bank and test clips, {job.where}; {shown} "
      f"(cap {max_points}, shared equally by each section's test clips, source and target training clips and "
      "SMOTE samples)."))


def write_report(path: str, out_dir: str | None = None, *, max_points: int = embedding_map.DEFAULT_MAX_POINTS,
                 seed: int = 0, embedding_maps: bool = True, section_maps: bool = False,
                 log: Callable[[str], None] | None = None) -> Report:
  """Writes the report of the pipeline workdir `path` (see the module docstring).

  Args:
    path: the pipeline workdir.
    out_dir: where to write (default `path/report`); `out_dir/index.html` and `out_dir/figures/`.
    max_points: cap on the points of each embedding map (see `embedding_map`); seed: its subsample and t-SNE.
    embedding_maps: draw the embedding maps, one per model with every section in it (one t-SNE each).
    section_maps: also one embedding map per model and section (one t-SNE each: 63 for the demo's 9 models
      and 7 sections, most of a report's time).
    log: called with one line per step (e.g. `print`).
  """
  t0 = time.perf_counter()
  say = log or (lambda _: None)
  wd = collect.read(path)
  out_dir = os.path.abspath(out_dir or workdir_lib.path(wd.path, workdir_lib.REPORT))
  figures = _Figures(out_dir)
  notes = list(wd.notes)
  values: dict[tuple[str, str, str], dict[str, float]] = {}
  section_blocks = []

  # The t-SNE projections run in a second process while this one draws the ROC curves, histograms and training
  # curves (on the demo workdir 19 s of the report's 62 s of CPU time; see BENCHMARKS.md). The worker is forked
  # (Linux), which is safe in the report program: it imports no JAX and starts no threads. In a process that has
  # imported JAX (whose threads make fork unsafe), elsewhere, or if the worker dies, the maps are projected here.
  jobs = _map_jobs(wd, max_points, seed, section_maps, notes) if embedding_maps else []
  with contextlib.ExitStack() as stack:
    projections = []
    if jobs and sys.platform.startswith("linux") and "jax" not in sys.modules:
      pool = stack.enter_context(concurrent.futures.ProcessPoolExecutor(
          max_workers=1, mp_context=multiprocessing.get_context("fork")))
      stack.callback(pool.shutdown, cancel_futures=True)  # runs first: an error does not wait for every map
      projections = [pool.submit(embedding_map.project, job.points.vectors, seed=seed) for job in jobs]

    for s in wd.sections:
      title = wd.protocol.unit_name(s.machine, s.section)
      say(f"report  {title}: ROC curves, histograms")
      blocks = []
      try:
        rows = {"models": [], "fused systems": []}
        for scorer in wd.scorers:
          rs = roc.roc_set(scorer.name, s.machine, s.section, s.test_labels, s.test_domains,
                           s.test_scores[scorer.key], protocol=wd.protocol)
          values[(scorer.key, s.machine, s.section)] = dict(rs.values)
          _check_against_results(wd, scorer.key, scorer.kind, rs, notes)
          rows["models" if scorer.kind == collect.MODEL else "fused systems"].append(rs)
        blocks.append(html.figure(figures.add(
            roc.roc_figure(title, rows), _slug("roc", s.machine, s.section), f"ROC curves, {title}",
            "ROC curves of each model (top) and fused system (bottom). Legend values: "
            f"{', '.join(name for name, _ in roc.VALUES[wd.protocol])} in percent, the numbers behind Tables 1 "
            "and 3.")))
      except roc.NotEvaluated as e:
        notes.append(f"{wd.protocol.unit_name(s.machine, s.section)}: not evaluated ({e}); no ROC curves")
      blocks.append(html.figure(figures.add(
          histograms.section_figure(title, _histogram_rows(wd, s)), _slug("scores", s.machine, s.section),
          f"score histograms, {title}",
          "Anomaly scores of the test clips against the normal training clips' leave-one-out scores (grey), per "
          "domain where every test clip's domain is known (else all clips in one panel); unlabelled test clips are "
          "drawn apart from normal and anomalous ones. The dashed line is the decision threshold fitted on the "
          "training scores (right of it: anomalous). Models: normalised scores; systems: their weighted sums.")))
      section_blocks.append((s, blocks))

    curve_blocks = []
    for log in wd.logs:
      data = curves.series(log.rows)
      file = f"{log.name}/{workdir_lib.TRAINING_LOG}"
      if not data:
        notes.append(f"{file}: no numeric series with two or more rows")
        continue
      name = wd.scorer(log.model_key).name if log.model_key else log.name
      say(f"report  training curves {name}")
      loss_label = "loss (cross-entropy, nats)" if log.kind == "fine-tuning" else "loss"
      curve_blocks.append(html.figure(figures.add(
          curves.curves_figure(f"{name} ({file})", data, loss_label=loss_label),
          _slug("curves", *log.name.split(os.sep)), f"training curves {name}",
          f"Every numeric column of {file} against the training step.")))

    maps: dict[tuple[str, str], list[str]] = {}
    model_maps: list[str] = []
    for i, job in enumerate(jobs):
      say(f"report  embedding map {job.model.name}, {job.where}")
      image = _draw_map(figures, job, _projection(projections[i] if projections else None, job, seed), max_points,
                        seed)
      if job.section is None:
        model_maps.append(image)
      else:
        maps.setdefault(job.section, []).append(image)

  sections_html = []
  for s, blocks in section_blocks:
    body = "".join(blocks)
    if maps.get((s.machine, s.section)):
      body += html.details(f"embedding maps ({len(maps[(s.machine, s.section)])} models)",
                           "".join(maps[(s.machine, s.section)]), open_=True)
    sections_html.append(f'<h3 id="{_slug(s.machine, s.section)}">{html.esc(s.machine)} section '
                         f"{html.esc(s.section)}</h3>{body}")

  systems = [f"{s.name}: " + ", ".join(f"{wd.scorer(k).name} {w:.2f}" for k, w in s.weights.items() if w)
             for s in wd.systems]
  intro = (f"<p>Workdir <code>{html.esc(wd.path)}</code>, dataset <code>{html.esc(wd.results.get('dataset', ''))}"
           f"</code>. Fused systems: {html.esc('; '.join(systems) or 'none')}.</p>")
  health = _health_warnings(wd)
  intro += health
  if notes:
    intro += "<div class=note><ul>" + "".join(f"<li>{html.esc(n)}</li>" for n in notes) + "</ul></div>"
  page_sections = [
      ("tables", "Tables", html.markdown_tables(wd.tables_markdown)
       + f"<h3>Per {wd.protocol.unit} (%)</h3><p>{html.esc(', '.join(n for n, _ in roc.VALUES[wd.protocol]))} of "
       f"every {wd.protocol.unit} that could be evaluated ({html.esc(wd.protocol.title)} rules): the values in the "
       "ROC legends, computed by <code>asd_jax.evaluation.metrics</code>.</p>" + _metrics_tables(wd, values)),
      ("sections", "ROC curves, score histograms" + (" and embedding maps" if maps else "") + " per section",
       "".join(sections_html)),
      ("maps", "Embedding maps", "".join(model_maps) or "<p>No embedding maps (no embeddings in the workdir, or "
       "--noembedding_maps).</p>"),
      ("training", "Training curves", health + ("".join(curve_blocks) or "<p>No metrics.jsonl in this workdir.</p>")),
      ("provenance", "Provenance: starting weights, wall time, versions, config", _provenance_section(wd)),
  ]
  page = html.page("asd_jax report", page_sections, intro=intro)
  index = os.path.join(out_dir, "index.html")
  atomic.write_text(index, page)
  figures.remove_stale()
  return Report(index=index, figures=figures.paths, metrics=values, notes=notes, seconds=time.perf_counter() - t0)
