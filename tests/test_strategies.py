"""Search strategies: aquasurf, random and regularized evolution behind one interface."""

from __future__ import annotations

import math

import numpy as np
import pytest

from actbench.expr import space
from actbench.search import strategies
from actbench.search.strategies import Candidates

SCHEMA = "binary(unary(x),unary(x))"
UNARY = ("zero", "identity", "relu", "tanh", "elu", "sigmoid", "swish", "exp", "abs")
BINARY = ("add", "mul", "max")
CHOICES = space.operator_choices(SCHEMA, unary=UNARY, binary=BINARY)
NAMES = ("aquasurf", "random", "evolution", "aquasurf-local")


@pytest.fixture(scope="module")
def small():
  """A real space: binary(unary(x),unary(x)) over 9 unary and 3 binary operators."""
  return Candidates.from_names(space.enumerate(SCHEMA, unary=UNARY, binary=BINARY),
                               schema=SCHEMA)


def _peak(n: int = 400, seed: int = 0):
  """Candidates on a 2-D grid-like embedding with accuracy peaking at one known point."""
  rng = np.random.default_rng(seed)
  embedding = rng.random((n, 2))
  accuracy = 0.9 - np.sqrt(((embedding - [0.7, 0.3]) ** 2).sum(axis=1))
  classes = [[f"f{i}"] for i in range(n)]
  candidates = Candidates(classes, embedding.astype(np.float32), None, baselines=())
  return candidates, embedding, accuracy


def _make(name, candidates, seed, embedding=None, **options):
  if name in ("evolution", "aquasurf-local"):
    options.setdefault("choices", CHOICES)
  return strategies.make_strategy(name, candidates, seed=seed, embedding=embedding, **options)


def _steps(strategy, accuracy, budget: int) -> dict[int, float]:
  history = {}
  while len(history) < budget:
    proposed = strategy.propose(history, 1)
    if not proposed:
      break
    history[proposed[0]] = float(accuracy[proposed[0]])
  return history


def _small_embedding(small):
  return np.random.default_rng(1).random((len(small), 2))


def test_index_of_finds_a_class_by_name_or_function(small):
  relu = small.index_of("relu(x)")
  assert relu is not None
  assert small.index_of("add(relu(x),zero(x))") == relu
  assert small.index_of("max(relu(x),zero(x))") == relu
  assert small.index_of(" add( relu(x) ,zero(x))") == relu
  assert small.index_of("mul(x, x)") == small.index_of("mul(identity(x),identity(x))")
  assert small.index_of("softsign(x)") is None  # not in the space
  assert small.names[relu] in small.classes[relu]
  assert len(small.names) == len(small)


def test_baseline_ids_in_baseline_order(small):
  present = ["elu", "relu", "sigmoid", "swish", "tanh"]  # the baselines this space holds
  assert small.baseline_ids() == [small.index_of(f"{name}(x)") for name in present]


def test_aquasurf_starts_with_the_baselines(small):
  strategy = _make("aquasurf", small, 0, embedding=_small_embedding(small))
  baselines = small.baseline_ids()
  assert strategy.propose({}, 3) == baselines[:3]
  assert strategy.propose({baselines[0]: 0.5}, 2, exclude=[baselines[1]]) == baselines[2:4]
  history = {b: 0.5 for b in baselines[:4]}
  proposed = strategy.propose(history, 3)
  assert proposed[0] == baselines[4] and not set(proposed[1:]) & set(baselines)


def test_aquasurf_fills_a_first_round_beyond_the_baselines_at_random(small):
  baselines = small.baseline_ids()[:3]
  limited = Candidates(small.classes, small.outputs, schema=small.schema,
                       baselines=tuple(small.names[i] for i in baselines))
  strategy = _make("aquasurf", limited, 0, embedding=_small_embedding(small))
  first = strategy.propose({}, 6)
  assert first[:3] == baselines and len(set(first)) == 6
  eligible = np.flatnonzero(strategy.surrogate.eligible)
  lowest = [int(i) for i in eligible if i not in baselines][:3]
  assert first[3:] != lowest  # not by id (the old fill: mul(relu(x),relu(x)), ...)
  assert set(first[3:]) <= set(eligible.tolist())
  assert strategy.propose({}, 6) == first  # the same store state: the same proposal
  others = {tuple(_make("aquasurf", limited, seed, embedding=_small_embedding(small))
                  .propose({}, 6)[3:]) for seed in range(1, 6)}
  assert len(others | {tuple(first[3:])}) > 1  # the seed decides the fill
  # Once anything is evaluated, the surrogate decides.
  history = {b: 0.5 for b in baselines}
  predictions = strategy.surrogate.predict(history)
  picked = strategy.propose(history, 3)
  rest = [i for i in eligible if i not in history]
  assert sorted(predictions[picked], reverse=True) == sorted(predictions[rest],
                                                             reverse=True)[:3]


def test_aquasurf_takes_the_highest_prediction_ties_by_id():
  candidates, embedding, _ = _peak(6)
  embedding = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]])
  strategy = _make("aquasurf", candidates, 0, embedding=embedding, neighbors=1)
  # 1-NN: rows 1, 2 predict 0.2 (row 0), rows 4, 5 predict 0.8 (row 3).
  assert strategy.propose({0: 0.2, 3: 0.8}, 3) == [4, 5, 1]
  assert strategy.propose({0: 0.8, 3: 0.2}, 2) == [1, 2]


def test_aquasurf_finds_the_best_far_faster_than_random():
  candidates, embedding, accuracy = _peak()
  best = int(np.argmax(accuracy))

  def evaluations(name, seed):
    history = _steps(_make(name, candidates, seed, embedding=embedding), accuracy, 400)
    return list(history).index(best) + 1

  aquasurf = np.median([evaluations("aquasurf", seed) for seed in range(3)])
  random = np.median([evaluations("random", seed) for seed in range(5)])
  assert aquasurf <= 40 and random >= 4 * aquasurf


def test_ineligible_rows_are_never_proposed():
  candidates, embedding, accuracy = _peak(50)
  embedding[[4, 9, 30]] = np.nan
  strategy = _make("aquasurf", candidates, 0, embedding=embedding)
  history = _steps(strategy, accuracy, 50)
  assert len(history) == 47 and not {4, 9, 30} & set(history)


@pytest.mark.parametrize("name", NAMES)
def test_proposals_are_distinct_new_and_exhaust(small, name):
  n = len(small)
  embedding = _small_embedding(small)
  strategy = _make(name, small, 0, embedding=embedding, population_size=4, sample_size=2) if (
      name == "evolution") else _make(name, small, 0, embedding=embedding)
  accuracy = np.random.default_rng(0).random(n)
  history = {}
  while len(history) < n - 3:
    exclude = {(len(history) * 7) % n, (len(history) * 11 + 1) % n}
    proposed = strategy.propose(history, min(5, n - 3 - len(history)), exclude=exclude)
    assert len(proposed) == min(5, n - 3 - len(history))
    assert len(set(proposed)) == len(proposed)
    assert not set(proposed) & (set(history) | exclude)
    assert all(isinstance(i, int) and 0 <= i < n for i in proposed)
    history.update({i: float(accuracy[i]) for i in proposed})
  rest = strategy.propose(history, 10)
  assert sorted(rest) == sorted(set(range(n)) - set(history))
  assert sorted(strategy.propose(history, 10, exclude=rest[:2])) == sorted(rest[2:])
  assert strategy.propose({i: 0.0 for i in range(n)}, 4) == []
  assert strategy.propose(history, 0) == []


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_per_seed(small, name):
  accuracy = np.random.default_rng(2).random(len(small))
  embedding = _small_embedding(small)
  options = {"population_size": 5, "sample_size": 2} if name == "evolution" else {}
  runs = [list(_steps(_make(name, small, seed, embedding=embedding, **options), accuracy, 30))
          for seed in (0, 0, 1)]
  assert runs[0] == runs[1]
  if name not in strategies.SURROGATE_STRATEGIES:  # with a given embedding nothing is random
    assert runs[0] != runs[2]


def test_local_mutants_are_the_classes_one_operator_away(small):
  strategy = _make("aquasurf-local", small, 0, embedding=_small_embedding(small))
  names = list(space.enumerate(SCHEMA, unary=UNARY, binary=BINARY))
  chosen = {name: strategies.schema_operators(name, SCHEMA) for name in names}
  for index in (small.index_of("relu(x)"), small.index_of("add(tanh(x),sigmoid(x))"), 7):
    expected = set()  # brute force: every pair of schema names differing at one placeholder
    for a in small.classes[index]:
      if a not in chosen:
        continue
      for b in names:
        if sum(x != y for x, y in zip(chosen[a], chosen[b])) == 1:
          expected.add(small.index_of(b))
    expected.discard(index)
    assert set(strategy.mutants(index).tolist()) == expected


def test_local_alternates_surrogate_picks_among_mutants_of_the_best(small):
  embedding = _small_embedding(small)
  strategy = _make("aquasurf-local", small, 0, embedding=embedding, parents=2)
  accuracy = np.random.default_rng(3).random(len(small))
  history = {i: float(accuracy[i]) for i in small.baseline_ids()}
  history.update({i: float(accuracy[i]) for i in range(9) if i not in history})
  for _ in range(6):
    predicted = strategy.surrogate.predict(history, k=3)
    best = sorted(history, key=lambda i: (-history[i], i))[:2]
    local = set(strategy.mutants(best[0]).tolist()) | set(strategy.mutants(best[1]).tolist())
    local -= set(history)
    pool = local if len(history) % 2 and local else set(range(len(small))) - set(history)
    expected = max(pool, key=lambda i: (predicted[i], -i))
    assert strategy.propose(history, 1) == [expected]
    history[expected] = float(accuracy[expected])


def test_mutation_changes_exactly_one_operator():
  rng = np.random.default_rng(0)
  full = space.operator_choices(SCHEMA)
  names = list(space.enumerate(SCHEMA))
  for parent in rng.choice(names, 200):
    child = strategies.mutate(parent, SCHEMA, rng)
    before = strategies.schema_operators(parent, SCHEMA)
    after = strategies.schema_operators(child, SCHEMA)
    assert after is not None and child in names
    assert sum(a != b for a, b in zip(before, after)) == 1
    assert all(op in options for op, options in zip(after, full))


def test_schema_operators_and_fill():
  assert strategies.schema_operators("max(relu(x),cosh(elu(x)))", SCHEMA) is None
  assert strategies.schema_operators("relu(x)", SCHEMA) is None
  assert strategies.schema_operators("max(relu(x),cosh(x))", SCHEMA) == ["max", "relu", "cosh"]
  assert strategies.schema_operators("sum_n(tanh(x),x)", "n-ary(unary(x),x)") == [
      "sum_n", "tanh"]
  assert strategies.fill_schema("n-ary(unary(x),x)", ["sum_n", "tanh"]) == "sum_n(tanh(x),x)"
  with pytest.raises(ValueError, match="not a name of the schema"):
    strategies.mutate("relu(x)", SCHEMA, np.random.default_rng(0))


def test_evolution_children_are_one_mutation_from_the_tournament_winner(small):
  """Population 3 = sample 3: the tournament sees every member, so the winner is the one
  finite accuracy (failures are the worst) and every child is one of its mutations."""
  strategy = _make("evolution", small, 0, population_size=3, sample_size=3, max_attempts=200)
  winner = small.index_of("add(tanh(x),exp(x))")  # 18 classes one mutation away
  others = [small.index_of("mul(exp(x),exp(x))"), small.index_of("add(abs(x),sigmoid(x))")]
  # Older evaluations age out: only the last three count.
  history = {small.index_of("relu(x)"): 0.99, others[0]: np.nan, winner: 0.7, others[1]: np.nan}
  parent = strategies.schema_operators(small.names[winner], SCHEMA)
  neighbours = set()
  for position, options in enumerate(CHOICES):
    for op in options:
      chosen = list(parent)
      chosen[position] = op
      neighbours.add(small.index_of(strategies.fill_schema(SCHEMA, chosen)))
  proposed = strategy.propose(history, 10)
  assert len(proposed) == 10 and set(proposed) <= neighbours - set(history)


def test_evolution_starts_random_then_falls_back_to_random(small):
  strategy = _make("evolution", small, 5, population_size=10, sample_size=3)
  random = _make("random", small, 5)
  # Before 10 evaluations exist, evolution walks the same seeded order as random search.
  assert strategy.propose({}, 10) == random.propose({}, 10)
  # Every class but a few evaluated: mutations keep hitting known classes, random fills in.
  history = {i: 0.5 for i in range(len(small) - 2)}
  assert sorted(strategy.propose(history, 5)) == [len(small) - 2, len(small) - 1]


def test_evolution_default_choices_are_the_schemas(small):
  strategy = strategies.make_strategy("evolution", small, seed=0)
  assert strategy.choices == space.operator_choices(SCHEMA)


def test_errors(small):
  with pytest.raises(ValueError, match="unknown strategy"):
    strategies.make_strategy("bayesian", small, seed=0)
  bare = Candidates(small.classes, small.outputs, None)
  with pytest.raises(ValueError, match="schema"):
    strategies.make_strategy("evolution", bare, seed=0)
  with pytest.raises(ValueError, match="rows"):
    strategies.make_strategy("aquasurf", small, seed=0, embedding=np.zeros((3, 2)))
  with pytest.raises(ValueError, match="outputs"):
    Candidates([["relu(x)"]], np.zeros((2, 1000)), None)
  assert math.isnan(strategies.AquaSurf(small, embedding=_small_embedding(small)).surrogate
                    .predict({}, failure_value=np.nan)[0])
