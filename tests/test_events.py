"""TensorBoard event files (actbench/report/events.py), read back with TensorBoard's own reader:
scalars equal to medians computed independently with NumPy, images byte for byte, text as the
Text tab renders it, restarts, and a log that never takes the run down."""

from __future__ import annotations

import io
import logging
import os
import warnings

import numpy as np
import pytest
from PIL import Image
from tensorboard.util import tensor_util

from actbench.report import events, plots
from tests.event_files import read_events, scalar_points
from configs import quickstart

with warnings.catch_warnings():  # its vendored HTML sanitizer's notice about itself
  warnings.simplefilter("ignore", DeprecationWarning)
  from tensorboard.plugins.text import text_plugin

NAMES = ["relu(x)", "tanh(x)", "max(relu(x),log_sigmoid(x))", "reciprocal(zero(x))"]


def _text(accumulator, tag) -> tuple[int, str]:
  """(step, Markdown) of a text summary, checked to be the text plugin's."""
  assert tag in accumulator.PluginTagToContent("text")
  [event] = accumulator.Tensors(tag)
  return event.step, tensor_util.make_ndarray(event.tensor_proto).item().decode("utf-8")


def _reference_median(values, seeds) -> float:
  """by_activation's rule in NumPy: each seed's mean over its runs, then the median over
  seeds, NaN-aware; NaN when nothing is finite."""
  values, seeds = np.asarray(values, np.float64), np.asarray(seeds)
  per_seed = []
  for seed in dict.fromkeys(seeds.tolist()):
    chosen = values[seeds == seed]
    per_seed.append(np.nanmean(chosen) if np.isfinite(chosen).any() else np.nan)
  per_seed = np.asarray(per_seed)
  return float(np.nanmedian(per_seed)) if np.isfinite(per_seed).any() else np.nan


def _epoch_values(rng, epochs, seeds_per_name=3):
  """Per epoch, a value per run (NAMES x seeds) with the awkward cases in it: NaN seeds, an
  inf, and a function that diverged in every seed (NAMES[3])."""
  runs = len(NAMES) * seeds_per_name
  result = []
  for _ in range(epochs):
    loss = rng.uniform(0.1, 2.0, runs)
    accuracy = rng.uniform(0.1, 1.0, runs)
    loss[1] = np.nan                 # relu, seed 1 diverged: median of the other two
    loss[3] = np.inf                 # tanh, seed 0: inf is a value, as np.nanmedian sees it
    loss[9:12] = accuracy[9:12] = np.nan
    result.append({"train_loss": loss, "validation_accuracy": accuracy})
  return result


def test_epoch_writes_each_functions_median_over_seeds(tmp_path):
  seeds = [0, 1, 2]
  names = [name for name in NAMES for _ in seeds]
  per_epoch = _epoch_values(np.random.default_rng(0), 3)
  with events.EventLog(str(tmp_path)) as log:
    for epoch, values in enumerate(per_epoch, 1):
      log.epoch(names, epoch, values)
  accumulator = read_events(tmp_path)
  for metric in ("train_loss", "validation_accuracy"):
    for position, name in enumerate(NAMES):
      tag = f"functions/{name}/{metric}"
      expected = {epoch: _reference_median(values[metric][3 * position:3 * position + 3],
                                           seeds)
                  for epoch, values in enumerate(per_epoch, 1)}
      expected = {epoch: value for epoch, value in expected.items() if np.isfinite(value)}
      if not expected:  # every seed diverged: no tag at all
        assert tag not in accumulator.Tags()["scalars"]
        continue
      points = scalar_points(accumulator, tag)
      assert sorted(points) == sorted(expected)  # steps are the epochs, from 1
      for epoch, value in expected.items():
        assert points[epoch] == pytest.approx(value, rel=1e-6)  # stored as float32
  # The NaN seed is left out of relu's median, not counted as a value.
  relu = per_epoch[0]["train_loss"][:3]
  assert scalar_points(accumulator, "functions/relu(x)/train_loss")[1] == pytest.approx(
      (relu[0] + relu[2]) / 2, rel=1e-6)


def test_epoch_with_folds_and_seeds(tmp_path):
  # Folds restart at epoch 1: each has its own tags. Runs of one seed within a call (folds
  # given to a single call) are averaged before the median, as by_activation does.
  rng = np.random.default_rng(1)
  names = ["relu(x)"] * 4 + ["tanh(x)"] * 4
  seeds = [0, 0, 1, 1] * 2
  log = events.EventLog(str(tmp_path))
  written = {}
  for fold in (0, 1):
    for epoch in (1, 2):
      values = {"validation_accuracy": rng.uniform(0.5, 1.0, 8)}
      log.epoch(names, epoch, values, fold=fold, seeds=seeds)
      written[fold, epoch] = values["validation_accuracy"]
  log.close()
  accumulator = read_events(tmp_path)
  assert "functions/relu(x)/validation_accuracy" not in accumulator.Tags()["scalars"]
  for fold in (0, 1):
    for position, name in enumerate(["relu(x)", "tanh(x)"]):
      points = scalar_points(accumulator, f"functions/{name}/fold{fold}/validation_accuracy")
      assert sorted(points) == [1, 2]
      for epoch in (1, 2):
        runs = written[fold, epoch][4 * position:4 * position + 4]
        expected = _reference_median(runs, seeds[:4])
        assert expected == pytest.approx(np.median([runs[:2].mean(), runs[2:].mean()]))
        assert points[epoch] == pytest.approx(expected, rel=1e-6)


def test_epoch_writes_the_metrics_asked_for(tmp_path):
  # train.py's per-epoch record has four curves and a "diverged" flag per run: by default the
  # training loss and validation accuracy are written, and a record without a validation
  # split is fine.
  record = {"train_loss": [1.0, 3.0], "train_accuracy": [0.5, 0.7],
            "validation_loss": [0.9, 0.8], "validation_accuracy": [0.6, 0.8],
            "diverged": [False, True]}
  with events.EventLog(str(tmp_path)) as log:
    log.epoch(["relu(x)"] * 2, 1, record)
    log.epoch(["tanh(x)"] * 2, 1, {"train_loss": [2.0, 4.0]})
    log.epoch(["elu(x)"] * 2, 1, record, metrics=("train_accuracy", "validation_loss"))
  assert sorted(read_events(tmp_path).Tags()["scalars"]) == [
      "functions/elu(x)/train_accuracy", "functions/elu(x)/validation_loss",
      "functions/relu(x)/train_loss", "functions/relu(x)/validation_accuracy",
      "functions/tanh(x)/train_loss"]


def test_epoch_rejects_values_that_do_not_match_the_runs(tmp_path):
  log = events.EventLog(str(tmp_path))
  with pytest.raises(ValueError, match="train_loss: 2 values for 3 runs"):
    log.epoch(["a", "a", "b"], 1, {"train_loss": [1.0, 2.0]})
  with pytest.raises(ValueError, match="2 seeds for 3 runs"):
    log.epoch(["a", "a", "b"], 1, {"train_loss": [1.0, 2.0, 3.0]}, seeds=[0, 1])


def test_round_scalars_and_restart_on_the_same_folder(tmp_path):
  first = events.EventLog(str(tmp_path))
  first.round(1, best=0.91, evaluated=8, failed=1, model_epochs_per_s=12.5,
              surrogate_spearman=float("nan"))
  first.round(2, best=0.93, evaluated=16, failed=1, stopped=3, model_epochs_per_s=13.0,
              surrogate_spearman=0.42)
  first.close()
  # A preempted search restarts on the same workdir: a new file, the rounds go on from the
  # number the store gives.
  with events.EventLog(str(tmp_path)) as second:
    second.round(3, best=float("nan"), evaluated=24, failed=2)
  assert first.path != second.path
  assert len([f for f in os.listdir(tmp_path) if f.startswith("events.out.tfevents.")]) == 2
  accumulator = read_events(tmp_path)
  assert scalar_points(accumulator, "search/evaluated") == {1: 8, 2: 16, 3: 24}
  assert scalar_points(accumulator, "search/failed") == {1: 1, 2: 1, 3: 2}
  assert scalar_points(accumulator, "search/stopped") == {1: 0, 2: 3, 3: 0}
  best = scalar_points(accumulator, "search/best_validation_accuracy")
  assert best.keys() == {1, 2}  # NaN (no finite accuracy yet) is not a point
  assert best[1] == pytest.approx(0.91, rel=1e-6) and best[2] == pytest.approx(0.93, rel=1e-6)
  assert scalar_points(accumulator, "search/model_epochs_per_s") == {1: 12.5, 2: 13.0}
  spearman = scalar_points(accumulator, "search/surrogate_loo_spearman")
  assert spearman.keys() == {2} and spearman[2] == pytest.approx(0.42, rel=1e-6)


def test_images_are_the_same_png_bytes(tmp_path):
  # The figure the search writes, from its file and from bytes.
  embedding = np.random.default_rng(0).normal(size=(20, 2))
  path = plots.surrogate_map(embedding, np.linspace(0.1, 0.9, 20), [1, 2, 3],
                             str(tmp_path / "surrogate_map.png"))
  with open(path, "rb") as f:
    png = f.read()
  small = io.BytesIO()
  Image.new("LA", (5, 3)).save(small, format="PNG")  # grey + alpha: 2 channels
  logdir = tmp_path / "tensorboard"
  with events.EventLog(str(logdir)) as log:
    log.image("search/surrogate_map", path, 1)
    log.image("search/surrogate_map", small.getvalue(), 2)
    log.image("search/search_curve", str(tmp_path / "not_written_yet.png"), 1)  # skipped
    log.image("search/not_a_png", b"GIF89a", 1)  # skipped
  accumulator = read_events(logdir)
  assert accumulator.Tags()["images"] == ["search/surrogate_map"]
  first, second = accumulator.Images("search/surrogate_map")
  assert (first.step, second.step) == (1, 2)
  assert first.encoded_image_string == png
  assert (first.width, first.height) == Image.open(io.BytesIO(png)).size
  assert second.encoded_image_string == small.getvalue()
  assert (second.width, second.height) == (5, 3)
  assert events.png_size(small.getvalue()) == (3, 5, 2)


def test_top_rows_and_config_as_text(tmp_path):
  rows = [{"rank": rank, "activation": f"max(relu(x),bessel_i{rank}e(x))",
           "validation_accuracy": 1 - rank / 100, "test_accuracy": 0.9 - rank / 100,
           "stopped_at_epoch": 4 if rank == 3 else "", "diverged": rank == 12}
          for rank in range(1, 13)]
  rows[1]["test_accuracy"] = float("nan")
  config = quickstart.get_config()
  with events.EventLog(str(tmp_path)) as log:
    log.top(rows, 5)
    log.config(config)
  accumulator = read_events(tmp_path)
  step, markdown = _text(accumulator, "search/top10")
  assert step == 5
  html = text_plugin.text_array_to_html(np.array(markdown.encode()), enable_markdown=True)
  assert html.count("<tr>") == 11  # the header and the first 10 rows
  assert "<td><code>max(relu(x),bessel_i1e(x))</code></td>\n<td>99.00</td>\n<td>89.00</td>" in html
  assert "<td>98.00</td>\n<td>-</td>" in html  # no test accuracy
  assert "<td>4</td>" in html  # stopped at epoch 4
  assert "bessel_i11e" not in html and "2 more in leaderboard.csv" in html
  step, markdown = _text(accumulator, "config")
  assert step == 0
  assert markdown.startswith("```yaml\n") and markdown.endswith("\n```")
  assert "  name: digits\n" in markdown and "- relu(x)\n" in markdown
  assert "!!python" not in markdown


def test_disabled_log_writes_nothing(tmp_path):
  logdir = tmp_path / "tensorboard"
  with events.EventLog(str(logdir), enabled=False) as log:
    log.epoch(["relu(x)"], 1, {"train_loss": [1.0]})
    log.round(1, best=0.9, evaluated=1, failed=0)
    log.image("search/surrogate_map", b"\x89PNG", 1)
    log.text("notes", "hello", 1)
    log.config(quickstart.get_config())
    log.top([], 1)
    log.flush()
  assert not logdir.exists()
  # Enabled but given nothing: no empty file either.
  events.EventLog(str(logdir)).close()
  assert not logdir.exists()


def test_buffered_until_flush(tmp_path):
  # Scalars stay in memory between flushes (no disk write per call); flush() writes them.
  log = events.EventLog(str(tmp_path), flush_secs=3600)
  for epoch in range(1, 4):
    log.epoch(NAMES, epoch, {"train_loss": [0.5] * 4})
  assert os.path.getsize(log.path) == 0
  log.flush()
  assert scalar_points(read_events(tmp_path), "functions/tanh(x)/train_loss") == {
      1: 0.5, 2: 0.5, 3: 0.5}
  # With flush_secs=0 every write reaches the disk at once.
  eager = events.EventLog(str(tmp_path / "eager"), flush_secs=0)
  eager.round(1, best=0.5, evaluated=1, failed=0)
  assert scalar_points(read_events(tmp_path / "eager"), "search/evaluated") == {1: 1}


def _write_everything(log):
  log.epoch(["relu(x)"], 1, {"train_loss": [1.0]})
  log.round(1, best=0.9, evaluated=1, failed=0)
  log.text("notes", "hello", 1)
  log.flush()
  log.round(2, best=0.9, evaluated=2, failed=0)
  log.close()


def _warnings(caplog):
  return [r for r in caplog.records if r.levelno == logging.WARNING and "TensorBoard" in
          r.getMessage()]


def test_a_folder_that_cannot_be_made_turns_the_log_off(tmp_path, caplog):
  blocker = tmp_path / "tensorboard"
  blocker.write_text("a file where the folder should be")
  log = events.EventLog(str(blocker))
  with caplog.at_level(logging.WARNING):
    _write_everything(log)
  assert not log.enabled
  assert len(_warnings(caplog)) == 1  # said once, then quiet
  assert blocker.read_text() == "a file where the folder should be"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_turns_the_log_off(tmp_path, monkeypatch, caplog):
  # Every write to /dev/full fails with ENOSPC when it reaches the device, as on a full disk:
  # here at the first flush.
  from tensorboardX import record_writer
  monkeypatch.setattr(record_writer, "open_file", lambda path: open("/dev/full", "wb"))
  log = events.EventLog(str(tmp_path))
  with caplog.at_level(logging.WARNING):
    _write_everything(log)
  assert not log.enabled
  [warning] = _warnings(caplog)
  assert "No space left" in warning.getMessage()


@pytest.mark.slow
def test_a_trained_populations_curves_equal_by_activation(tmp_path):
  # What a live wiring writes after each epoch (each function's median over its seeds) is
  # exactly the curve by_activation reports for the finished population, epoch by epoch.
  from actbench.engine import data, train
  config = quickstart.get_config("smoke")
  config.train.num_epochs = 2
  seeds = [0, 1, 2]
  names = ["relu(x)", "tanh(x)", "reciprocal(zero(x))"]  # the last diverges at once
  result = train.train_population(config, names, seeds, dataset=data.load("digits"))
  metrics = ("train_loss", "validation_accuracy")
  with events.EventLog(str(tmp_path)) as log:
    for epoch in range(1, config.train.num_epochs + 1):
      log.epoch(result.activations, epoch,
                {metric: [runs[epoch - 1] for runs in curves]
                 for metric, curves in result.curves.items()}, seeds=result.seeds)
  accumulator = read_events(tmp_path)
  summaries = result.by_activation()
  assert summaries["reciprocal(zero(x))"]["diverged"]
  for name in names:
    for metric in metrics:
      curve = summaries[name][f"{metric}_curve"]
      expected = {epoch: value for epoch, value in enumerate(curve, 1) if np.isfinite(value)}
      tag = f"functions/{name}/{metric}"
      if not expected:
        assert tag not in accumulator.Tags()["scalars"]
        continue
      points = scalar_points(accumulator, tag)
      assert sorted(points) == sorted(expected) == [1, 2]
      for epoch, value in expected.items():
        assert points[epoch] == pytest.approx(value, rel=1e-6)
