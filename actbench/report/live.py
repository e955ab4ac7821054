"""Watching a run while it goes on: TensorBoard event files and <workdir>/report.html.

    observer = live.LiveReport(config, workdir)
    search.run(config, workdir, observer=observer)      # what modes.run_search does
    observer.close()

The search calls `epoch` after every epoch a population trains and `round` after every round
it records (search/loop.py: RoundInfo). `page` writes report.html from any store's classes and
evaluations: mode report uses it to follow a search that other machines run.

One process writes a workdir's events: the first to take <workdir>/tensorboard/.writer (an
advisory lock, released when the process ends, kill -9 included); another process on the same
workdir writes the page only.
"""

from __future__ import annotations

import fcntl
import math
import os
import time
from collections.abc import Mapping, Sequence

import numpy as np

from actbench.report import events, html_page, plots
# The module, not report.leaderboard (the package's name for its function of the same name).
from actbench.report.leaderboard import store_leaderboard

TENSORBOARD = "tensorboard"
PAGE = "report.html"
# The figures (search curve, surrogate map) cost matplotlib time (about a second): drawn after
# a round when the time since they were last drawn is at least their cost over this share, so
# that they take at most 1% of a search (after every round of a long search, every few rounds
# of the quickstart's 15 s ones), and once at its end (modes._search_outputs).
FIGURES_SHARE = 0.01
FIRST_DRAW_S = 1.0  # what drawing them is taken to cost before it has been timed
FIGURES = {"Search curve": "search_curve.png", "Surrogate map": "surrogate_map.png",
           "Best functions": "best_functions.png"}


class LiveReport:
  """A search's observer (loop.run's `observer`): events and the page after every round."""

  def __init__(self, config, workdir: str):
    start = time.perf_counter()
    self._config = config
    self._workdir = workdir
    self._lock = _writer_lock(os.path.join(workdir, TENSORBOARD)) if (
        config.report.tensorboard) else None
    self.events = events.EventLog(os.path.join(workdir, TENSORBOARD),
                                  enabled=self._lock is not None)
    self.events.config(config)
    self.page_path = os.path.join(workdir, PAGE) if config.report.html else None
    self._figures_at, self._draw_s = time.monotonic(), FIRST_DRAW_S
    # Spent opening and writing events and the page: what watching costs the run.
    self.seconds = time.perf_counter() - start

  def epoch(self, names: Sequence[str], seeds: Sequence[int], epoch: int,
            record: Mapping[str, Sequence[float]], fold: int | None = None) -> None:
    """After an epoch of a population: each function's training loss and validation accuracy
    (the median over its seeds of the runs' own values: a diverged run's NaN leaves a gap)."""
    start = time.perf_counter()
    self.events.epoch(names, epoch, record, fold=fold, seeds=seeds)
    self.seconds += time.perf_counter() - start

  def round(self, info) -> None:
    """After a recorded round (loop.RoundInfo): the search's scalars, top 10 and, now and
    then, its figures in the events; the page rewritten."""
    start = time.perf_counter()
    try:
      self._round(info)
    finally:
      self.seconds += time.perf_counter() - start

  def _round(self, info) -> None:
    evaluations = info.evaluations
    step = len(evaluations)
    rows = store_leaderboard(info.classes, evaluations)
    statuses = [ev.status for ev in evaluations.values()]
    accuracies = [ev.metrics.get("validation_accuracy", math.nan)
                  for ev in evaluations.values() if ev.status == "ok"]
    finite = [a for a in accuracies if math.isfinite(a)]
    epochs = sum(info.result.epochs) if info.result.epochs else 0
    self.events.round(step, best=max(finite) if finite else math.nan, evaluated=step,
                      failed=statuses.count("failed"), stopped=statuses.count("stopped"),
                      model_epochs_per_s=epochs / info.wall_s if info.wall_s > 0 else None,
                      surrogate_spearman=info.surrogate_spearman)
    self.events.top(rows, step)
    if time.monotonic() - self._figures_at >= self._draw_s / FIGURES_SHARE:
      began = time.monotonic()
      for path in draw_figures(self._workdir, info.classes, evaluations, info.embedding,
                               self._config).values():
        self.events.image(f"search/{os.path.splitext(os.path.basename(path))[0]}", path, step)
      self._figures_at = time.monotonic()
      self._draw_s = self._figures_at - began
    self.events.flush()
    if self.page_path:
      write_page(self.page_path, self._config, info.classes, evaluations, rows=rows,
                 provenance=info.provenance)

  def finish(self, classes, evaluations, provenance: Mapping[str, str] | None = None, *,
             rows: list[dict] | None = None) -> None:
    """At the end of a search, after modes._search_outputs drew its figures: them in the
    events, and the page with them (rows: the evaluations' leaderboard, when already built)."""
    start = time.perf_counter()
    step = len(evaluations)
    for name in FIGURES.values():
      path = os.path.join(self._workdir, name)
      if os.path.exists(path):
        self.events.image(f"search/{os.path.splitext(name)[0]}", path, step)
    self.events.flush()
    if self.page_path:
      write_page(self.page_path, self._config, classes, evaluations, rows=rows,
                 provenance=provenance)
    self.seconds += time.perf_counter() - start

  def close(self) -> None:
    start = time.perf_counter()
    self.events.close()
    self.seconds += time.perf_counter() - start
    if self._lock is not None:
      self._lock.close()


def _writer_lock(directory: str):
  """An open file holding the exclusive lock on directory/.writer, or None when another
  process holds it (it writes the events) or the directory cannot be made."""
  try:
    os.makedirs(directory, exist_ok=True)
    handle = open(os.path.join(directory, ".writer"), "a", encoding="utf-8")
  except OSError:
    return None
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    handle.close()
    return None
  return handle


def draw_figures(workdir: str, classes, evaluations, embedding, config) -> dict[str, str]:
  """The search curve and the surrogate map of the evaluations so far (title -> path of the
  PNGs drawn): after a round, and by modes._search_outputs at a search's end. A 'raw'
  features surrogate has no 2-D map."""
  accuracies = np.full(len(classes), np.nan)
  for class_id, evaluation in evaluations.items():
    if evaluation.status == "ok":
      accuracies[class_id] = evaluation.metrics.get("validation_accuracy", math.nan)
  drawn = {}
  order = list(evaluations)
  values = np.array([accuracies[i] for i in order], np.float64)
  if values.size:
    curve = np.fmax.accumulate(np.where(np.isfinite(values), values, -np.inf))
    curve[~np.isfinite(curve)] = np.nan
    drawn["Search curve"] = plots.search_curves(
        {str(config.search.strategy): curve[None]}, os.path.join(workdir, FIGURES["Search curve"]),
        title="This search")
  if embedding is not None and np.shape(embedding)[1] == 2:
    drawn["Surrogate map"] = plots.surrogate_map(
        embedding, accuracies, list(evaluations),
        os.path.join(workdir, FIGURES["Surrogate map"]),
        names=[members[0] for members in classes])
  return drawn


def write_page(path: str, config, classes, evaluations, *, rows: list[dict] | None = None,
               provenance: Mapping[str, str] | None = None) -> str:
  """report.html of a store's classes and evaluations: the leaderboard with each function's
  validation curve, the figures found beside `path`, the baselines, the recipe and the
  provenance. Written atomically (html_page.write)."""
  rows = store_leaderboard(classes, evaluations) if rows is None else rows
  curves = {}
  for class_id, evaluation in evaluations.items():
    curve = evaluation.curve("validation_accuracy")
    if curve:
      curves[classes[class_id][0]] = list(curve)
  names = {members[0] for members in classes}
  baselines = [row for row in rows if row["activation"] in set(config.search.baselines) & names]
  directory = os.path.dirname(os.path.abspath(path))
  figures = {title: os.path.join(directory, name) for title, name in FIGURES.items()}
  done = len(evaluations)
  what = "benchmark" if config.mode == "benchmark" else f"{config.search.strategy} search"
  title = f"{what} of {config.search.space}: {done} of {len(classes)} classes evaluated"
  return html_page.write(path, html_page.render(
      title=title, rows=rows, curves=curves, figures=figures, baselines=baselines,
      recipe=recipe_of(config), provenance=dict(provenance or {})))


def recipe_of(config) -> dict[str, str]:
  """The fields a result depends on (data, model, training, seeds), flattened."""
  flat = {}
  for section in ("dataset", "model", "train"):
    for key, value in config[section].items():
      if not hasattr(value, "items"):
        flat[f"{section}.{key}"] = str(value)
  flat["seeds"] = str(tuple(config.seeds))
  flat["search.fidelity.rungs"] = str(tuple(config.search.fidelity.rungs))
  return flat
