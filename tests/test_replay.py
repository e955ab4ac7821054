"""Replays of strategies against known accuracies."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from actbench.expr import space
from actbench.search import replay
from actbench.search.strategies import Candidates

# Finite, sorted: 0.1 0.2 0.3 0.4 0.5 0.7 0.9 0.95; the 99th percentile is
# 0.9 + 0.93 * 0.05 = 0.9465, so only class 8 (0.95) is in the top 1%.
ACCURACY = np.array([0.5, np.nan, 0.7, 0.2, 0.9, 0.1, np.nan, 0.3, 0.95, 0.4])


class Rotation:
  """The trivial strategy: classes in order from `start`, wrapping around."""

  def __init__(self, start: int, n: int = 10):
    self.order = [(start + i) % n for i in range(n)]

  def propose(self, history, k, *, exclude=()):
    return [i for i in self.order if i not in history and i not in exclude][:k]


@pytest.fixture(scope="module")
def table():
  return Candidates([[f"f{i}"] for i in range(10)], np.zeros((10, 3), np.float32), None,
                    baselines=())


@pytest.fixture(scope="module")
def rotations(table):
  return replay.replay(table, ACCURACY, {"rotation": Rotation}, seeds=range(4), budget=8)


def test_thresholds(rotations):
  assert rotations.best_accuracy == 0.95
  assert rotations.top1_threshold == pytest.approx(0.9465)


def test_best_so_far_curves(rotations):
  run = rotations["rotation"]
  assert run.best_so_far.shape == (4, 8) and run.proposals.shape == (4, 8)
  np.testing.assert_array_equal(run.proposals[0], range(8))
  np.testing.assert_array_equal(run.best_so_far[0], [0.5, 0.5, 0.7, 0.7, 0.9, 0.9, 0.9, 0.9])
  # Seed 1 starts with a failure: nothing found yet.
  np.testing.assert_array_equal(run.best_so_far[1], [-np.inf, 0.7, 0.7, 0.9, 0.9, 0.9, 0.9,
                                                     0.95])
  assert (np.diff(run.best_so_far, axis=1) >= 0).all()


def test_evaluations_to_best_and_top1(rotations):
  run = rotations["rotation"]
  # Class 8 is the (8 - seed + 1)-th evaluation: 9 (beyond the budget of 8), 8, 7, 6.
  np.testing.assert_array_equal(run.evaluations_to_best, [np.nan, 8, 7, 6])
  np.testing.assert_array_equal(run.evaluations_to_top1, [np.nan, 8, 7, 6])


def test_summary_matches_hand_computation(rotations):
  summary = rotations.summary()["rotation"]
  # Sorted with not-reached last: 6, 7, 8, inf; positions 0.75, 1.5, 2.25.
  assert summary["evaluations_to_best"] == {"q25": 6.75, "median": 7.5, "q75": math.inf,
                                            "reached": 0.75}
  # Final best per seed: 0.9, 0.95, 0.95, 0.95.
  final = summary["final_best"]
  assert final["q25"] == pytest.approx(0.9375) and final["median"] == final["q75"] == 0.95
  document = json.loads(json.dumps(rotations.to_json(), allow_nan=False))
  assert document["summary"]["rotation"]["evaluations_to_best"]["q75"] is None
  assert document["strategies"]["rotation"]["best_so_far"][1][0] is None
  assert document["strategies"]["rotation"]["evaluations_to_best"][0] is None
  assert document["strategies"]["rotation"]["proposals"][0] == list(range(8))
  assert document["budget"] == 8 and document["seeds"] == [0, 1, 2, 3]


def test_a_tie_makes_functions_near_the_best_the_target(table):
  # Within 0.06 of the best (0.95): classes 4 (0.9) and 8 (0.95); the top 1% stays class 8.
  tied = replay.replay(table, ACCURACY, {"rotation": Rotation}, seeds=range(4), budget=8,
                       tie=0.06)
  assert tied.tie == 0.06 and tied.best_accuracy == 0.95
  run = tied["rotation"]
  for seed in range(4):  # brute force over each rotation's order
    order = [(seed + i) % 10 for i in range(10)]
    first = next(i + 1 for i, c in enumerate(order) if ACCURACY[c] >= 0.95 - 0.06)
    assert run.evaluations_to_best[seed] == first
    # The replay stops there; the top-1% count is the plain one when reached by then.
    assert (run.proposals[seed][first:] == -1).all()
  assert tied.to_json()["tie"] == 0.06
  with pytest.raises(ValueError, match="tie"):
    replay.replay(table, ACCURACY, {"rotation": Rotation}, tie=-0.1)


def test_layouts_are_kept_and_found_again(tmp_path, monkeypatch):
  schema = "binary(unary(x),unary(x))"
  candidates = Candidates.from_names(
      space.enumerate(schema, unary=("zero", "identity", "relu", "tanh", "sigmoid", "swish"),
                      binary=("add", "max")), schema=schema)
  accuracy = np.random.default_rng(0).random(len(candidates))
  kwargs = dict(seeds=range(2), budget=10, feature_set="outputs", stop_at_best=False,
                layout_cache=str(tmp_path))
  first = replay.replay(candidates, accuracy, ("aquasurf",), **kwargs)
  assert len(list(tmp_path.glob("layout-outputs-4[23]-*.npy"))) == 2
  monkeypatch.setattr(replay.surrogate, "embed", lambda *a, **k: pytest.fail("refitted"))
  again = replay.replay(candidates, accuracy, ("aquasurf", "aquasurf-local"), **kwargs)
  np.testing.assert_array_equal(first["aquasurf"].proposals, again["aquasurf"].proposals)


def test_quantile_rules():
  assert replay.quantile([3.0, 1.0, 2.0], 0.5) == 2.0
  assert replay.quantile([1.0, np.nan], 0.5) == math.inf
  assert replay.quantile([1.0, np.nan], 0.0) == 1.0
  assert replay.quantile([-np.inf, 1.0], 0.5) == -math.inf


def test_exhaustion_carries_the_curve(table):
  result = replay.replay(table, ACCURACY, {"rotation": Rotation}, seeds=[2], budget=15)
  run = result["rotation"]
  assert (run.proposals[0, 10:] == -1).all()
  np.testing.assert_array_equal(run.best_so_far[0, 9:], 0.95)


def test_batches_and_duplicates(table):
  result = replay.replay(table, ACCURACY, ("random",), seeds=range(5), budget=10, batch=3,
                         stop_at_best=False)
  run = result["random"]
  for row in run.proposals:
    assert sorted(row) == list(range(10))
  assert (run.evaluations_to_best == [list(row).index(8) + 1 for row in run.proposals]).all()

  class Repeats:
    def propose(self, history, k, *, exclude=()):
      return [0]

  with pytest.raises(RuntimeError, match="twice"):
    replay.replay(table, ACCURACY, {"bad": lambda seed: Repeats()}, seeds=[0], budget=3)


def test_named_strategies_and_seeded_layouts():
  """A small real space, every strategy by name; aquasurf gets a UMAP layout per seed."""
  schema = "binary(unary(x),unary(x))"
  unary = ("zero", "identity", "relu", "tanh", "elu", "sigmoid", "swish", "exp", "abs",
           "softsign", "erf", "square")
  candidates = Candidates.from_names(space.enumerate(schema, unary=unary,
                                                     binary=("add", "mul", "max")),
                                     schema=schema)
  finite = np.isfinite(candidates.outputs).all(axis=1)
  values = np.tanh(np.where(finite[:, None], candidates.outputs, 0))
  accuracy = np.where(finite, 1 - np.abs(values - np.tanh(2 * np.clip(values, 0, 9))).mean(1),
                      np.nan)
  options = {"evolution": {"population_size": 5, "sample_size": 2,
                           "choices": space.operator_choices(schema, unary, ("add", "mul",
                                                                             "max"))}}
  result = replay.replay(candidates, accuracy, seeds=range(2), budget=25, batch=2,
                         feature_set="outputs", strategy_options=options, stop_at_best=False)
  assert set(result.runs) == {"aquasurf", "random", "evolution"}
  aquasurf = result["aquasurf"].proposals
  baselines = candidates.baseline_ids()
  assert list(aquasurf[0, :len(baselines)]) == baselines == list(aquasurf[1, :len(baselines)])
  assert list(aquasurf[0]) != list(aquasurf[1])  # different layouts, different searches
  for run in result.runs.values():
    assert (np.diff(run.best_so_far, axis=1) >= 0).all()
    for row in run.proposals:
      assert len(set(row.tolist())) == 25
  fixed = replay.replay(candidates, accuracy, ("aquasurf",), seeds=range(2), budget=25,
                        embedding=np.random.default_rng(0).random((len(candidates), 2)))
  np.testing.assert_array_equal(fixed["aquasurf"].proposals[0], fixed["aquasurf"].proposals[1])


def test_rejects_bad_tables(table):
  with pytest.raises(ValueError, match="accuracies"):
    replay.replay(table, ACCURACY[:5], ("random",))
  with pytest.raises(ValueError, match="finite"):
    replay.replay(table, np.full(10, np.nan), ("random",))


def test_stopping_at_the_best_changes_no_curve_or_count(table):
  full = replay.replay(table, ACCURACY, ("random",), seeds=range(5), budget=10,
                       stop_at_best=False)["random"]
  short = replay.replay(table, ACCURACY, ("random",), seeds=range(5), budget=10)["random"]
  np.testing.assert_array_equal(full.best_so_far, short.best_so_far)
  np.testing.assert_array_equal(full.evaluations_to_best, short.evaluations_to_best)
  np.testing.assert_array_equal(full.evaluations_to_top1, short.evaluations_to_top1)
  for row, steps in zip(short.proposals, full.evaluations_to_best):
    assert (row[int(steps):] == -1).all() and (row[:int(steps)] >= 0).all()
