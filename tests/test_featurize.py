"""Fisher features on a budget (featurize.py): the sketch, the rounds' picks against
independent references, and a budgeted replay that never proposes an unfeatured class."""

import math

import numpy as np
import pytest

from actbench.expr import features
from actbench.search import featurize, replay, strategies
from tests import featurize_reference


def _compressed(outputs):
  outputs = np.asarray(outputs, np.float64)
  return np.sign(outputs) * np.log1p(np.abs(outputs))


def test_sketch_keeps_the_distances_of_smooth_compressed_outputs():
  x = features.reference_points()
  # Outputs whose compressed values are polynomials of degree < SKETCH_DIMS lie in the
  # sketch's span: their sketches keep norms and distances exactly (float64 reference).
  smooth = []
  for coefficients in ([0.1, 1.0], [0.0, 0.2, 0.05, -0.003], [1.0, -0.5, 0.0, 0.0, 0.001]):
    compressed = np.polynomial.polynomial.polyval(x, coefficients)
    smooth.append(np.sign(compressed) * np.expm1(np.abs(compressed)))
  sketches = featurize.sketch_of(np.array(smooth))
  reference = _compressed(smooth)
  for i in range(3):
    assert np.linalg.norm(sketches[i]) == pytest.approx(np.linalg.norm(reference[i]), rel=1e-5)
    for j in range(i):
      assert np.linalg.norm(sketches[i] - sketches[j]) == pytest.approx(
          np.linalg.norm(reference[i] - reference[j]), rel=1e-5)
  # Any function: the sketch is the compressed outputs' coordinates on an orthonormal basis.
  outputs = features.outputs(["relu(x)", "tanh(x)", "exp(x)", "reciprocal(zero(x))"])
  sketches = featurize.sketch_of(outputs)
  np.testing.assert_allclose(sketches, featurize_reference.sketch(outputs), rtol=1e-5,
                             atol=1e-5)
  assert np.isnan(sketches[3]).all()  # 1/0: not finite, never a candidate
  streamed = np.concatenate([s for _, s in featurize.iter_sketches(
      ["relu(x)", "tanh(x)", "exp(x)", "reciprocal(zero(x))"], chunk_size=3)])
  np.testing.assert_array_equal(streamed, sketches)


def test_plan_rounds_and_sizes():
  plan = featurize.Plan(budget=25, round_size=10, every=4)
  assert plan.rounds == 3
  assert [plan.size_of(r) for r in range(3)] == [10, 10, 5]
  assert [plan.rounds_due(n) for n in (0, 3, 4, 7, 8, 100)] == [1, 1, 2, 2, 3, 3]
  with pytest.raises(ValueError, match="choice"):
    featurize.Plan(budget=5, round_size=1, every=1, choice="best")


def _space(n=400, seed=0):
  rng = np.random.default_rng(seed)
  sketches = rng.normal(size=(n, featurize.SKETCH_DIMS)).astype(np.float32)
  sketches[rng.choice(n, 20, replace=False)] = np.nan  # non-finite outputs
  return sketches


def test_output_guided_picks_match_a_knn_reference():
  sketches = _space()
  finite = np.isfinite(sketches).all(axis=1)
  featured = np.zeros(len(sketches), bool)
  featured[np.flatnonzero(finite)[:30]] = True
  history = {int(i): float(a) for i, a in zip(np.flatnonzero(finite)[:12],
                                              np.linspace(0.1, 0.9, 12))}
  history[int(np.flatnonzero(finite)[12])] = math.nan  # a failure regresses as 0
  plan = featurize.Plan(budget=100, round_size=40, every=5)
  picks = plan.pick(sketches, featured, history, 0)
  # Reference: scikit-learn's k-NN on the evaluated sketches, best prediction first, then the
  # smallest mean distance to the 3 neighbours, then the class id.
  assert picks == featurize_reference.knn_picks(sketches, featured, history, 40)
  assert not featured[picks].any() and finite[picks].all()


def test_diversity_picks_are_the_k_means_representatives():
  sketches = _space(200)
  finite = np.isfinite(sketches).all(axis=1)
  featured = np.zeros(len(sketches), bool)
  featured[np.flatnonzero(finite)[:3]] = True  # the baselines, not evaluated yet
  plan = featurize.Plan(budget=10, round_size=10, every=5)
  picks = plan.pick(sketches, featured, {}, 0)
  assert picks == featurize_reference.representative_picks(sketches, featured, 10, [0, 0])
  assert len(set(picks)) == 10 and not featured[picks].any()


def test_random_picks_are_seeded_and_outside_the_featured():
  sketches = _space()
  finite = np.isfinite(sketches).all(axis=1)
  featured = np.zeros(len(sketches), bool)
  featured[:50] = True
  plan = featurize.Plan(budget=60, round_size=30, every=5, choice="random", seed=3)
  first = plan.pick(sketches, featured, {1: 0.5}, 0)
  assert first == plan.pick(sketches, featured, {1: 0.5}, 0)
  assert first != plan.pick(sketches, featured, {1: 0.5}, 1)
  assert len(set(first)) == 30 and not featured[first].any() and finite[first].all()


@pytest.fixture(scope="module")
def small_table():
  """A made-up table of 120 real functions (their outputs), accuracy a smooth function of the
  outputs, Fisher rows made from them: what a budgeted replay needs."""
  from actbench.expr import space  # pylint: disable=import-outside-toplevel
  names = list(space.enumerate("binary(unary(x),unary(x))",
                               unary=("identity", "relu", "tanh", "sigmoid", "elu", "swish",
                                      "softplus", "sinh", "exp"),
                               binary=("add", "max")))
  candidates = strategies.Candidates.from_names(names, schema=None,
                                                baselines=("relu(x)", "tanh(x)"))
  outputs = np.clip(candidates.outputs, -50, 50)
  fisher = np.sort(np.abs(np.tanh(outputs[:, ::50])), axis=1)
  candidates = strategies.Candidates(candidates.classes, candidates.outputs, fisher,
                                     baselines=("relu(x)", "tanh(x)"))
  accuracies = 1.0 / (1.0 + np.abs(outputs - np.maximum(features.reference_points(), 0)).mean(1))
  accuracies[~np.isfinite(candidates.outputs).all(axis=1)] = np.nan
  return candidates, accuracies


def test_budgeted_replay_features_exactly_what_the_rounds_pick(small_table):
  candidates, accuracies = small_table
  plan = featurize.Plan(budget=30, round_size=10, every=4)
  proposed = []

  class Recording:  # the strategy the budget rebuilds after each round, wrapped to watch it
    def __init__(self, layout):
      self.inner = strategies.make_strategy("aquasurf", candidates, seed=0, feature_set="raw",
                                            embedding=layout)
      self.eligible = np.isfinite(layout).all(axis=1)

    def propose(self, history, k, exclude=()):
      result = self.inner.propose(history, k, exclude=exclude)
      baselines = set(candidates.baseline_ids())
      assert all(self.eligible[i] or i in baselines for i in result)
      proposed.extend(result)
      return result

  budgeted = featurize.BudgetedStrategy(candidates, plan, Recording, feature_set="raw")
  order = replay.run_one(budgeted, accuracies, budget=20, batch=2)
  # The rounds again, from the evaluations in order: each picked after the evaluations that
  # were known when it was due.
  sketches = featurize.sketch_of(candidates.outputs)
  featured = list(candidates.baseline_ids())
  history = {}
  rounds = []
  for position in range(0, len(order) + 1, 2):
    history = {int(i): float(accuracies[i]) for i in order[:position]}
    while len(rounds) < plan.rounds_due(len(history)):
      mask = np.zeros(len(candidates), bool)
      mask[featured] = True
      rounds.append(plan.pick(sketches, mask, history, len(rounds)))
      featured += rounds[-1]
  assert budgeted.picks == rounds
  assert set(order.tolist()) <= set(featured)
  assert set(proposed) == set(order.tolist())


def test_config_mistakes_about_the_budget_are_one_line_each():
  from actbench import config_fields  # pylint: disable=import-outside-toplevel
  from configs import quickstart  # pylint: disable=import-outside-toplevel
  config = quickstart.get_config()
  config.search.fisher_budget = -1
  config.search.fisher_choice = "outptus"
  assert config_fields.problems(config) == [
      "config.search.fisher_choice = 'outptus' is not one of ('outputs', 'random') (did you "
      "mean 'outputs'?)",
      "config.search.fisher_budget = -1: must be 0 or more"]
  config = quickstart.get_config()
  config.mode = "benchmark"
  config.search.fisher_budget = 100
  assert config_fields.problems(config) == [
      "config.search.fisher_budget = 100: a benchmark table holds every function's Fisher "
      "features; set it to 0 for mode benchmark"]
  config.mode = "search"
  assert config_fields.problems(config) == []
  plan = featurize.Plan.from_config(config)
  assert (plan.budget, plan.round_size, plan.every, plan.choice) == (100, 10, 8, "outputs")


@pytest.mark.slow
def test_on_digits_v2_output_guided_rounds_find_the_best_sooner_than_random_ones():
  """The issue's replay, small: a budget of 500 of the v2 table's 2,791 functions, 6 seeds,
  the k-NN on the raw features standing in for UMAP (seconds, not minutes; the UMAP figures
  are bench/fisher_budget_replay.py's, in the README)."""
  from actbench import tables  # pylint: disable=import-outside-toplevel
  from configs import digits_bench  # pylint: disable=import-outside-toplevel
  config = digits_bench.get_config()
  table = tables.load("digits")
  candidates = strategies.Candidates.from_table(table, schema=config.search.space)
  accuracies = table.accuracy("validation")
  found = {}
  for choice in featurize.CHOICES:
    result = replay.replay(candidates, accuracies, strategies=("aquasurf",), seeds=range(6),
                           budget=len(candidates), tie=config.replay.tie,
                           feature_set="raw",
                           fisher_budget=featurize.Plan(500, 50, 8, choice))
    found[choice] = result["aquasurf"].evaluations_to_best
    assert result.fisher_budget["choice"] == choice
  # A random featured set misses every function tied with the best in some seeds; the
  # output-guided one finds one in every seed, and sooner.
  assert np.isfinite(found["outputs"]).all() and not np.isfinite(found["random"]).all()
  assert replay.quantile(found["outputs"], 0.5) < replay.quantile(found["random"], 0.5)
