"""Act-Bench-Digits, the tables shipped with actbench (v2 and the first version): contents, and a
slice of v2 as the replay fixture (the surrogate must beat random search on real training
results)."""

import numpy as np
import pytest

from actbench import tables
from actbench.expr import operators, space
from actbench.search import replay
from actbench.search.strategies import Candidates


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def table(cache):
  return tables.load("digits", cache_dir=cache)


def _check_space_and_failures(table):
  assert len(table) == 2791  # every class of binary(unary(x),unary(x)) plus the baselines
  names = set(space.enumerate(space.BENCHMARK_SCHEMA))
  members = {name for members in table.classes() for name in members}
  assert names <= members
  validation = table.accuracy("validation")
  failed = table.metrics["Diverged"] == 1
  assert np.isnan(validation[failed]).all() and np.isfinite(validation[~failed]).all()
  assert validation[table.index("add(relu(x),zero(x))")] == validation[table.index("relu(x)")]
  assert table.fisher.shape == (2791, 378)
  return validation, failed


def test_v2_trains_every_baseline_and_tops_them(table):
  validation, failed = _check_space_and_failures(table)
  # The v2 recipe was chosen so that every baseline trains (bench/digits_recipe.py).
  for name in operators.BASELINES:
    assert validation[table.index(f"{name}(x)")] > 0.9, name
  assert np.nanmax(validation) > validation[table.index("relu(x)")]
  assert failed.sum() == 1419  # diverged on all 5 folds (v1: 1,722 on any of 3 seeds)
  assert np.isfinite(table.fisher[~failed]).mean() > 0.95


def test_v2_has_the_learning_curves_of_its_final_accuracies(table):
  curve = table.curve("validation")
  assert curve.shape == (2791, 10)  # the recipe's 10 epochs
  validation = table.accuracy("validation")
  trained = np.isfinite(validation)
  np.testing.assert_array_equal(curve[trained, -1], validation[trained])
  assert np.isnan(curve[~trained, -1]).all()
  # Training helps: the median function that trains gains from the first epoch to the last.
  median = np.nanmedian(curve[trained], axis=0)
  assert median[-1] > median[0] + 0.05
  for key in ("Train Accuracy Curve", "Validation Loss Curve", "Train Loss Curve"):
    assert table.curves[key].shape == (2791, 10)


def test_v1_stays_loadable_under_its_own_name(cache):
  v1 = tables.load("digits-v1", cache_dir=cache)
  validation, failed = _check_space_and_failures(v1)
  assert failed.sum() == 1722  # its 3-epoch recipe: most functions diverge
  assert validation[v1.index("relu(x)")] == pytest.approx(0.9)
  assert validation[v1.index("sigmoid(x)")] == pytest.approx(0.0778, abs=1e-4)  # untrained


@pytest.mark.slow
def test_replay_on_a_slice_finds_good_functions_sooner_than_random(table):
  rows = np.arange(0, len(table), 5)  # 559 functions, every fifth
  part = table.subset(rows)
  candidates = Candidates.from_table(part, schema=space.BENCHMARK_SCHEMA)
  result = replay.replay(candidates, part.accuracy("validation"), ("aquasurf", "random"),
                         seeds=range(5), budget=len(part), feature_set="outputs")
  summary = result.summary()
  assert summary["aquasurf"]["evaluations_to_top1"]["reached"] == 1.0
  assert (summary["aquasurf"]["evaluations_to_top1"]["median"]
          < summary["random"]["evaluations_to_top1"]["median"])
