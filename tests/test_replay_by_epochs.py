"""Mode replay and mode report on a table with learning curves: the Spearman per epoch, the
searches replayed by training epochs with and without successive halving, and the report."""

import json
import math
import os

import numpy as np
import pytest
from scipy import stats

from actbench import config_fields, modes, tables
from actbench.engine import halving
from actbench.search import cost_replay, strategies
from configs import quickstart

N, EPOCHS = 40, 4


def curved_table(path: str) -> tables.Table:
  """40 functions of the digits table (their names and Fisher rows) with made-up learning
  curves of 4 epochs that end at their validation accuracy."""
  source = tables.load("digits").subset(range(N))
  final = source.accuracy("validation")
  rng = np.random.default_rng(0)
  early = np.clip(final[:, None] - rng.uniform(0, 0.3, (N, EPOCHS - 1)), 0, 1)
  curves = np.concatenate([np.sort(early, axis=1), final[:, None]], axis=1)
  curves[~np.isfinite(final)] = np.nan  # failed from the first epoch
  table = tables.Table(source.names, source.equivalents, source.metrics, source.fisher,
                       curves={"Validation Accuracy Curve": curves})
  tables.write(table, path)
  return tables.load(path)


def replay_config(path: str):
  config = quickstart.get_config()
  config.mode = "replay"
  config.replay.table = path
  config.replay.strategies = ("aquasurf", "random", "evolution")
  config.replay.seeds = 3
  config.replay.budget = N
  config.replay.quality_features = ("raw",)
  config.replay.quality_sizes = (10,)
  config.replay.epoch_budget = 60
  config.surrogate.features = "raw"  # no UMAP: seconds
  config.search.population_size = 6
  config.search.fidelity.rungs = (1, 2, EPOCHS)
  config.search.fidelity.eta = 2
  return config


def test_replay_and_report_by_epochs(tmp_path):
  path = str(tmp_path / "curved.json")
  table = curved_table(path)
  config = replay_config(path)
  workdir = str(tmp_path / "replay")
  text = modes.run(config, workdir)
  with open(os.path.join(workdir, "replay.json"), encoding="utf-8") as f:
    saved = json.load(f)
  curves, accuracies = table.curve("validation"), table.accuracy("validation")
  finite = np.isfinite(accuracies)
  expected = [stats.spearmanr(curves[finite, k], accuracies[finite]).statistic
              for k in range(EPOCHS)]
  np.testing.assert_allclose(saved["curve_spearman"], expected)
  assert saved["curve_spearman"][-1] == pytest.approx(1.0)
  best = np.argsort(np.where(finite, accuracies, -np.inf))[::-1][:max(2, math.ceil(
      .1 * finite.sum()))]
  assert saved["curve_spearman_best"]["share"] == .1
  np.testing.assert_allclose(saved["curve_spearman_best"]["values"], [
      stats.spearmanr(curves[best, k], accuracies[best]).statistic for k in range(EPOCHS)])
  # The replay by epochs is cost_replay's, for every strategy one function at a time, in
  # rounds of the population size, and in those rounds with halving.
  cost = saved["cost"]
  assert list(cost["variants"]) == [
      "aquasurf", "aquasurf@6", "aquasurf+halving", "random", "random@6", "random+halving",
      "evolution", "evolution@6", "evolution+halving"]
  assert cost["epoch_budget"] == 60 and cost["num_epochs"] == EPOCHS
  candidates = strategies.Candidates.from_table(table, schema=config.search.space)
  choices = strategies.space.operator_choices(config.search.space)
  direct = cost_replay.replay_by_cost(
      candidates, accuracies, curves,
      cost_replay.make_variants(("random", "evolution"), batches=(1, 6),
                                fidelity=halving.Fidelity((1, 2, EPOCHS), 2), population=6),
      seeds=range(3), epoch_budget=60, tie=0.0, feature_set="raw",
      strategy_options={"evolution": {"choices": choices}})
  for name, run in direct.runs.items():
    assert cost["runs"][name]["epochs_spent"] == run.epochs_spent.tolist(), name
    assert cost["runs"][name]["stopped"] == run.stopped.tolist(), name
  with open(os.path.join(workdir, "replay-summary.json"), encoding="utf-8") as f:
    brief = json.load(f)
  assert brief["cost"]["summary"] == cost["summary"] and "runs" not in brief["cost"]
  assert brief["curve_spearman"] == saved["curve_spearman"]
  assert brief["curve_spearman_best"] == saved["curve_spearman_best"]
  assert os.path.getsize(os.path.join(workdir, "cost_curves.png")) > 0
  assert "aquasurf+halving" in text and "Spearman of the accuracy after each epoch" in text

  # The report: the Spearman per epoch, the replay by epochs and the halving targets.
  config.mode = "report"
  config.benchmark.table = "curved.json"
  os.rename(path, os.path.join(workdir, "curved.json"))
  config.report.document = os.path.join(workdir, "docs", "report.md")
  modes.run(config, workdir)
  with open(config.report.document, encoding="utf-8") as f:
    document = f.read()
  assert "## Learning curves and successive halving" in document
  assert "| every function | " + " | ".join(f"{rho:.3f}" for rho in expected) + " |" in document
  assert "| the best 10% by final accuracy | " + " | ".join(
      f"{rho:.3f}" for rho in saved["curve_spearman_best"]["values"]) + " |" in document
  for name, values in cost["summary"].items():
    median = values["epochs_to_best"]["median"]
    shown = "not reached" if median is None else f"{median:g}"
    assert f"| {name} | {shown} (" in document
  assert "- Median epochs to the best (tied): aquasurf with halving" in document
  assert "- Seeds whose best at the epoch budget is tied with the table's" in document
  assert os.path.getsize(os.path.join(workdir, "docs", "report", "cost_curves.png")) > 0


def test_halving_a_replay_is_checked_against_the_table_before_any_replay(tmp_path):
  path = str(tmp_path / "curved.json")
  curved_table(path)
  config = replay_config(path)
  config.search.fidelity.rungs = (1, 2, 5)
  with pytest.raises(config_fields.ConfigError, match=r"config.search.fidelity.rungs must end "
                     r"at the table's 4 epochs of learning curves, got \[1, 2, 5\]"):
    modes.run(config, str(tmp_path / "replay"))
  plain = str(tmp_path / "plain.json")
  source = tables.load("digits").subset(range(N))  # without the curves the table has
  tables.write(tables.Table(source.names, source.equivalents, source.metrics, source.fisher),
               plain)
  config = replay_config(plain)
  with pytest.raises(config_fields.ConfigError, match="the table has no 'Validation Accuracy "
                     "Curve'"):
    modes.run(config, str(tmp_path / "replay"))
  assert not os.path.exists(os.path.join(tmp_path, "replay", "replay.json"))
