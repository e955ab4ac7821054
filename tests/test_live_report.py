"""Watching a search: the TensorBoard events and report.html a search writes as it goes
(report/live.py through search.loop's observer), and mode report rewriting the page from a
store. The page's own behaviour in a browser is tests/test_html_page.py's."""

import json
import math
import os
import re

import numpy as np
import pytest

from actbench import modes, search
from actbench.report import live
from actbench.report.leaderboard import store_leaderboard
from actbench.search import loop, store
from tests import browser
from tests.event_files import read_events, scalar_points
from tests.test_search import tiny_config


def page_rows(path) -> list[list]:
  """The leaderboard rows report.html carries (its JSON: rank, activation, validation...)."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  found = re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S)
  return json.loads(found.group(1))["rows"]


class Rounds:
  """An observer beside the real one: what the search told it, round by round."""

  def __init__(self, inner):
    self.inner, self.infos = inner, []

  def epoch(self, *args, **kwargs):
    self.inner.epoch(*args, **kwargs)

  def round(self, info):
    self.infos.append(info)
    self.inner.round(info)


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
  """A tiny search (2 epochs, 3 rounds of 3) watched by a LiveReport, as mode search runs it."""
  workdir = str(tmp_path_factory.mktemp("watched"))
  config = tiny_config(budget=9)
  config.train.num_epochs = 2
  config = modes.config_fields.checked(config)
  with pytest.MonkeyPatch.context() as patch:  # figures after every round (none is short)
    patch.setattr(live, "FIRST_DRAW_S", 0.0)
    patch.setattr(live, "FIGURES_SHARE", 1.0)
    observer = Rounds(live.LiveReport(config, workdir))
    summary = loop.run(config, workdir, progress=False, observer=observer)
  # At its end mode search draws the figures (modes._search_outputs), then the observer
  # finishes with them.
  live.draw_figures(workdir, summary.classes, summary.evaluations, summary.embedding, config)
  observer.inner.finish(summary.classes, summary.evaluations, summary.provenance)
  observer.inner.close()
  return workdir, config, summary, observer


@pytest.mark.slow
def test_the_events_hold_the_stores_curves_and_each_rounds_figures(watched):
  workdir, _, summary, observer = watched
  events = read_events(os.path.join(workdir, live.TENSORBOARD))
  tags = set(events.Tags()["scalars"])
  # Per function and epoch: the learning curves the store recorded (one seed, one fold: the
  # store's medians over seeds are the runs' own values).
  for class_id, evaluation in summary.evaluations.items():
    name = summary.classes[class_id][0]
    for metric in ("train_loss", "validation_accuracy"):
      curve = evaluation.curve(metric)
      assert len(curve) == 2
      tag = f"functions/{name}/{metric}"
      if not all(math.isfinite(v) for v in curve):
        continue  # a diverged run leaves gaps
      assert tag in tags
      points = scalar_points(events, tag)
      assert sorted(points) == [1, 2]
      np.testing.assert_allclose([points[1], points[2]], curve, rtol=1e-6)
  # Per round, at the number of classes evaluated: what the store held then.
  assert len(observer.infos) == 3
  steps = [len(info.evaluations) for info in observer.infos]
  assert steps == [3, 6, 9]
  assert sorted(scalar_points(events, "search/evaluated")) == steps
  for info in observer.infos:
    step = len(info.evaluations)
    ok = [ev.metrics["validation_accuracy"] for ev in info.evaluations.values()
          if ev.status == "ok"]
    assert scalar_points(events, "search/evaluated")[step] == step
    assert scalar_points(events, "search/failed")[step] == sum(
        ev.status == "failed" for ev in info.evaluations.values())
    assert scalar_points(events, "search/best_validation_accuracy")[step] == pytest.approx(max(ok))
    epochs = sum(info.result.epochs)
    assert epochs == 3 * 2  # 3 functions x 1 seed x 2 epochs
    assert scalar_points(events, "search/model_epochs_per_s")[step] == pytest.approx(
        epochs / info.wall_s, rel=1e-5)
  # The surrogate's leave-one-out Spearman, recomputed from the layout and the evaluations.
  last = observer.infos[-1]
  history, _ = loop.split_history(last.evaluations)
  ids = list(history)
  expected = search.surrogate.leave_one_out_spearman(last.embedding[ids],
                                                      [history[i] for i in ids])
  assert last.surrogate_spearman == pytest.approx(expected, nan_ok=True)
  if math.isfinite(expected):
    assert scalar_points(events, "search/surrogate_loo_spearman")[9] == pytest.approx(expected)
  # The config as text, the top 10 after every round, the final figures as images.
  texts = set(events.Tags()["tensors"])
  assert "config" in texts and "search/top10" in texts
  for tag in ("search/search_curve", "search/surrogate_map"):
    assert [image.step for image in events.Images(tag)] == [3, 6, 9, 9], tag  # and the end's


@pytest.mark.slow
def test_the_page_shows_the_stores_leaderboard(watched):
  workdir, _, summary, _ = watched
  rows = store_leaderboard(summary.classes, summary.evaluations)
  shown = page_rows(os.path.join(workdir, live.PAGE))
  assert [row[1] for row in shown] == [row["activation"] for row in rows]
  for row, values in zip(rows, shown):
    if math.isfinite(row["validation_accuracy"]):
      assert values[2] == pytest.approx(row["validation_accuracy"])
    else:
      assert values[2] is None
  with open(os.path.join(workdir, live.PAGE), encoding="utf-8") as f:
    page = f.read()
  assert "data:image/png;base64," in page  # the figures, embedded
  assert str(search.store_path(workdir)) in page  # the provenance


@pytest.mark.slow
def test_the_page_of_a_search_in_a_browser(watched, tmp_path):
  workdir, _, summary, _ = watched
  rows = store_leaderboard(summary.classes, summary.evaluations)
  with browser.chromium() as chrome:
    page = browser.open_page(chrome, os.path.join(workdir, live.PAGE))
    shown = page.page.evaluate("""() => {
      const keys = Array.from(document.querySelectorAll("#board thead th")).map(
          (th) => th.dataset.key || th.textContent);
      const column = keys.indexOf("validation_accuracy");
      return Array.from(document.querySelectorAll("#board tbody tr")).map(
          (tr) => [tr.querySelector(".fn").textContent, tr.cells[column].textContent]);
    }""")
    page.page.screenshot(path=str(tmp_path / "search-page.png"))
  assert [name for name, _ in shown] == [row["activation"] for row in rows]
  assert [text for _, text in shown] == [
      f"{100 * row['validation_accuracy']:.2f}" if math.isfinite(row["validation_accuracy"])
      else "-" for row in rows]
  assert set(page.requests) == {page.url} and not page.errors  # nothing leaves the file


@pytest.mark.slow
def test_mode_report_rewrites_the_page_from_the_store_and_watch_ends_with_the_search(watched):
  workdir, config, summary, _ = watched
  os.remove(os.path.join(workdir, live.PAGE))
  config = tiny_config(budget=9)
  config.train.num_epochs = 2
  config.mode = "report"
  config.report.watch_s = 3600  # the search has ended: one rewrite, no wait
  text = modes.run(config, workdir)
  assert "report.html" in text
  shown = page_rows(os.path.join(workdir, live.PAGE))
  assert len(shown) == len(summary.evaluations)
  with store.Store(search.store_path(workdir)) as db:
    assert modes._search_ended(config, workdir) is True  # pylint: disable=protected-access
    assert len(db.evaluated_ids()) == 9


def test_watch_s_must_not_be_negative():
  config = tiny_config()
  config.report.watch_s = -1
  with pytest.raises(modes.config_fields.ConfigError, match="config.report.watch_s = -1"):
    modes.config_fields.checked(config)


def test_one_process_writes_a_workdirs_events(tmp_path):
  config = modes.config_fields.checked(tiny_config())
  first = live.LiveReport(config, str(tmp_path))
  second = live.LiveReport(config, str(tmp_path))  # another process on the same workdir
  assert first.events.enabled and not second.events.enabled
  first.close()
  third = live.LiveReport(config, str(tmp_path))  # the lock goes with the first
  assert third.events.enabled
  third.close()
  second.close()
  config.report.tensorboard = False
  assert not live.LiveReport(config, str(tmp_path)).events.enabled


@pytest.mark.slow
def test_a_failing_observer_never_stops_the_search(tmp_path):
  class Broken:
    def epoch(self, *args, **kwargs):
      raise RuntimeError("a full disk")

    def round(self, info):
      raise RuntimeError("a full disk")

  config = modes.config_fields.checked(tiny_config(budget=3))
  summary = loop.run(config, str(tmp_path), progress=False, observer=Broken())
  assert len(summary.evaluations) == 3


def test_mode_train_writes_each_functions_curves(tmp_path):
  config = tiny_config()
  config.mode = "train"
  config.activations = ("relu(x)", "tanh(x)")
  config.seeds = (0, 1)
  config.train.num_epochs = 2
  modes.run(config, str(tmp_path))
  with open(tmp_path / "results.json", encoding="utf-8") as f:
    summaries = json.load(f)["by_activation"]
  events = read_events(tmp_path / live.TENSORBOARD)
  for name in config.activations:
    for metric in ("train_loss", "validation_accuracy"):
      # The median over the two seeds, as results.json sums the curve up.
      points = scalar_points(events, f"functions/{name}/{metric}")
      np.testing.assert_allclose([points[1], points[2]], summaries[name][f"{metric}_curve"],
                                 rtol=1e-6)
  assert not os.path.exists(tmp_path / live.PAGE)  # a page is a search's
