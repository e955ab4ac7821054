"""Search strategies over a table of candidate equivalence classes, behind one interface.

    strategy = make_strategy("aquasurf", candidates, seed=0)
    ids = strategy.propose(history, k, exclude=claimed)

`history` maps class id -> validation accuracy (NaN: the training failed) in evaluation order;
`exclude` holds the classes other workers have claimed. `propose` returns the next k distinct
class ids in neither, fewer only when the strategy's space is exhausted. Every strategy is
deterministic for its seed and the sequence of calls it sees.

  aquasurf   baselines first, then the surrogate's highest prediction (METHOD.md section 4);
  random     uniform without replacement;
  evolution  regularized evolution (Real et al. 2019) with one-operator mutations of the schema;
  aquasurf-local  aquasurf, every other proposal from the one-operator mutations of the best
             functions so far (the surrogate picks among them): evolution's locality, guided.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from actbench.expr import operators, space
from actbench.expr.expression import Expr, parse, parse_schema
from actbench.search import surrogate
from actbench.search.candidates import Candidates  # also re-exported: strategies.Candidates


class Strategy(Protocol):

  def propose(self, history: Mapping[int, float], k: int, *,
              exclude: Sequence[int] = ()) -> list[int]:
    ...


def _check_k(k: int):
  if k < 0:
    raise ValueError(f"k must be non-negative, got {k}")


class _Permutation:
  """A fixed random order of the classes, walked past whatever is taken: uniform sampling
  without replacement that stays deterministic whatever the caller excludes."""

  def __init__(self, n: int, rng: np.random.Generator):
    self.order = rng.permutation(n)
    self.start = 0  # every class before it is known to be taken

  def take(self, k: int, taken: set, history: Mapping[int, float]) -> list[int]:
    """Up to k classes not in `taken` (which gains them)."""
    # Evaluated classes stay evaluated (claims in `taken` may be released): skip them for good.
    while self.start < len(self.order) and int(self.order[self.start]) in history:
      self.start += 1
    result = []
    for index in self.order[self.start:].tolist():
      if len(result) == k:
        break
      if index not in taken:
        result.append(index)
        taken.add(index)
    return result


class RandomSearch:
  """Uniform sampling without replacement over all classes."""

  def __init__(self, candidates: Candidates, *, seed: int):
    self._order = _Permutation(len(candidates), np.random.default_rng(seed))

  def propose(self, history, k, *, exclude=()) -> list[int]:
    _check_k(k)
    return self._order.take(k, set(history) | set(exclude), history)


class AquaSurf:
  """Baselines first (those not yet evaluated), then the unevaluated eligible classes with the
  highest k-NN predictions, ties broken by class id (METHOD.md section 4). Before any
  evaluation the surrogate knows nothing: a round with room beyond the baselines fills it with
  random eligible classes (drawn from the seed and the number evaluated, so a restarted search
  proposes the same), never by id.

  `embedding` is a surrogate.embed array or a Surrogate. Without one, the candidates are
  embedded with random_state 42 + seed (the paper's 42 for seed 0): a seed changes the
  surrogate's layout, nothing else.
  """

  def __init__(self, candidates: Candidates, *, seed: int = 0, feature_set: str = "union",
               embedding=None, neighbors: int = surrogate.DEFAULT_K,
               failure_value: float = 0.0):
    if embedding is None:
      embedding = surrogate.embed(candidates, feature_set,
                                  random_state=surrogate.DEFAULT_RANDOM_STATE + seed)
    if not isinstance(embedding, surrogate.Surrogate):
      embedding = surrogate.Surrogate(embedding)
    if len(embedding) != len(candidates):
      raise ValueError(f"embedding has {len(embedding)} rows for {len(candidates)} classes")
    self.surrogate = embedding
    self.baselines = candidates.baseline_ids()
    self.neighbors, self.failure_value = neighbors, failure_value
    self.seed = seed

  def propose(self, history, k, *, exclude=()) -> list[int]:
    _check_k(k)
    taken = set(history) | set(exclude)
    result = [b for b in self.baselines if b not in taken][:k]
    if len(result) == k:
      return result
    taken.update(result)
    return result + self._after_baselines(history, k - len(result), taken,
                                          len(history) + len(result))

  def _after_baselines(self, history, k: int, taken: set, position: int) -> list[int]:
    """The next `k` eligible classes not in `taken`, the baselines done; `position`: how many
    evaluations come before the first of them (a subclass may alternate on it)."""
    del position  # every proposal is the surrogate's
    open_ = self.surrogate.eligible.copy()
    open_[list(taken)] = False
    rows = np.flatnonzero(open_)
    if not any(self.surrogate.eligible[i] for i in history):  # nothing to regress on yet
      order = np.random.default_rng([self.seed, len(history)]).permutation(rows)
    else:
      predictions = self.surrogate.predict(history, k=self.neighbors,
                                            failure_value=self.failure_value)
      # A stable sort of ascending ids keeps the lowest id first among equal predictions.
      order = rows[np.argsort(-predictions[rows], kind="stable")]
    return order[:k].tolist()


def schema_operators(expr, schema) -> list[str] | None:
  """The operators `expr` puts at the schema's placeholders (pre-order), or None when `expr`
  is not a name of the schema (other shape, fixed operator differs, wrong arity)."""
  expr, schema = parse(expr), parse_schema(schema)
  found = []
  stack = [(expr, schema)]
  while stack:
    node, pattern = stack.pop()
    if len(node.args) != len(pattern.args):
      return None
    if pattern.op in operators.ARITIES:
      if node.op == "x" or operators.get(node.op).arity != pattern.op:
        return None
      found.append(node.op)
    elif node.op != pattern.op:
      return None
    stack.extend(reversed(list(zip(node.args, pattern.args))))
  return found


def fill_schema(schema, chosen: Sequence[str]) -> str:
  """The name with `chosen[i]` at the schema's i-th placeholder (pre-order)."""
  chosen = iter(chosen)

  def build(pattern: Expr) -> Expr:
    head = next(chosen) if pattern.op in operators.ARITIES else pattern.op
    return Expr(head, tuple(build(arg) for arg in pattern.args))

  return str(build(parse_schema(schema)))


def mutate(name, schema, rng: np.random.Generator,
           choices: Sequence[Sequence[str]] | None = None) -> str:
  """One-operator mutation: a random placeholder of the schema gets another operator of the
  same kind (from space.operator_choices(schema) unless `choices` is given).

  Raises:
    ValueError: `name` is not a name of the schema, or no placeholder has an alternative.
  """
  chosen = schema_operators(name, schema)
  if chosen is None:
    raise ValueError(f"{str(name)!r} is not a name of the schema {str(schema)!r}")
  choices = space.operator_choices(schema) if choices is None else choices
  open_ = [i for i, options in enumerate(choices) if any(o != chosen[i] for o in options)]
  if not open_:
    raise ValueError(f"no placeholder of {str(schema)!r} has an alternative operator")
  position = open_[rng.integers(len(open_))]
  alternatives = [o for o in choices[position] if o != chosen[position]]
  chosen = list(chosen)
  chosen[position] = alternatives[rng.integers(len(alternatives))]
  return fill_schema(schema, chosen)


class RegularizedEvolution:
  """Regularized (aging) evolution, Real et al. 2019.

  Until `population_size` evaluations exist, proposals are random. Then each proposal is a
  tournament: `sample_size` of the last `population_size` evaluations (older ones have aged
  out) are drawn, the fittest (failed: the worst) is mutated by one operator until the
  child's class is new; after `max_attempts` children of known classes, a random class.
  A mutation puts another operator of the same kind at one placeholder: `choices` per
  placeholder, by default space.operator_choices(schema) (the benchmark operators); pass the
  table's own operator sets when it was enumerated over others.
  """

  def __init__(self, candidates: Candidates, *, seed: int, population_size: int = 20,
               sample_size: int = 5, max_attempts: int = 50,
               choices: Sequence[Sequence[str]] | None = None):
    if candidates.schema is None:
      raise ValueError("evolution mutates names of a schema; the candidates have none")
    if not 1 <= sample_size <= population_size:
      raise ValueError(f"need 1 <= sample_size ({sample_size}) <= population_size "
                       f"({population_size})")
    self.candidates = candidates
    self.population_size, self.sample_size = population_size, sample_size
    self.max_attempts = max_attempts
    self.choices = (space.operator_choices(candidates.schema) if choices is None
                    else [tuple(c) for c in choices])
    self.rng = np.random.default_rng(seed)
    self._random = _Permutation(len(candidates), self.rng)
    self._parents: dict[int, str | None] = {}

  def _parent_name(self, index: int) -> str | None:
    """A member of the class that is a name of the schema (the representative if it is)."""
    if index not in self._parents:
      self._parents[index] = next(
          (m for m in self.candidates.classes[index]
           if schema_operators(m, self.candidates.schema) is not None), None)
    return self._parents[index]

  def _child(self, history, taken) -> int | None:
    population = list(history.items())[-self.population_size:]
    sample = self.rng.choice(len(population), self.sample_size, replace=False)
    fitness = [population[i][1] if math.isfinite(population[i][1]) else -math.inf
               for i in sample]
    parent = self._parent_name(population[sample[int(np.argmax(fitness))]][0])
    if parent is None:
      return None
    for _ in range(self.max_attempts):
      index = self.candidates.index_of(mutate(parent, self.candidates.schema, self.rng,
                                              self.choices))
      if index is not None and index not in taken:
        return index
    return None

  def propose(self, history, k, *, exclude=()) -> list[int]:
    _check_k(k)
    taken = set(history) | set(exclude)
    result = []
    while len(result) < k:
      child = None
      if len(history) >= self.population_size:
        child = self._child(history, taken)
      if child is None:
        fallback = self._random.take(1, taken, history)
        if not fallback:
          break
        child = fallback[0]
      result.append(child)
      taken.add(child)
    return result


class LocalAquaSurf(AquaSurf):
  """AquaSurf with a local search around the best functions found so far.

  Where the table says the surrogate loses to evolution (docs/digits-bench.md), near-equal
  functions at the top differ by one operator: every other proposal (the odd-numbered
  evaluations) is the unevaluated one-operator mutation of the `parents` best evaluated
  functions that the surrogate predicts highest; the others, and any proposal with no such
  mutation left, are aquasurf's. Baselines and the first round as aquasurf.
  """

  def __init__(self, candidates: Candidates, *, seed: int = 0, feature_set: str = "union",
               embedding=None, neighbors: int = surrogate.DEFAULT_K,
               failure_value: float = 0.0, parents: int = 5,
               choices: Sequence[Sequence[str]] | None = None):
    super().__init__(candidates, seed=seed, feature_set=feature_set, embedding=embedding,
                     neighbors=neighbors, failure_value=failure_value)
    if candidates.schema is None:
      raise ValueError("aquasurf-local mutates names of a schema; the candidates have none")
    self.candidates, self.parents = candidates, int(parents)
    self.choices = (space.operator_choices(candidates.schema) if choices is None
                    else [tuple(c) for c in choices])
    self._mutants: dict[int, np.ndarray] = {}

  def mutants(self, index: int) -> np.ndarray:
    """The classes one operator away from class `index` (any of its members of the schema)."""
    if index not in self._mutants:
      found = set()
      for member in self.candidates.classes[index]:
        chosen = schema_operators(member, self.candidates.schema)
        if chosen is None:
          continue
        for position, options in enumerate(self.choices):
          for option in options:
            if option != chosen[position]:
              name = fill_schema(self.candidates.schema,
                                 chosen[:position] + [option] + chosen[position + 1:])
              other = self.candidates.index_of(name)
              if other is not None and other != index:
                found.add(other)
      self._mutants[index] = np.array(sorted(found), np.int64)
    return self._mutants[index]

  def _after_baselines(self, history, k: int, taken: set, position: int) -> list[int]:
    if not any(self.surrogate.eligible[i] for i in history):  # the first round: aquasurf's
      return super()._after_baselines(history, k, taken, position)
    predictions = self.surrogate.predict(history, k=self.neighbors,
                                         failure_value=self.failure_value)
    scores = np.where(self.surrogate.eligible, predictions, -np.inf)
    ranked = sorted((i for i, v in history.items() if math.isfinite(v)),
                    key=lambda i: (-history[i], i))[:self.parents]
    local = np.unique(np.concatenate([self.mutants(i) for i in ranked] or [np.zeros(0, int)]))
    overall = np.argsort(-scores, kind="stable")
    result = []
    while len(result) < k:
      pick = None
      if (position + len(result)) % 2:
        open_ = [i for i in local if i not in taken and np.isfinite(scores[i])]
        if open_:
          pick = max(open_, key=lambda i: (scores[i], -i))
      if pick is None:
        pick = next((int(i) for i in overall if int(i) not in taken and
                     np.isfinite(scores[i])), None)
      if pick is None:
        break
      result.append(int(pick))
      taken.add(int(pick))
    return result


STRATEGIES = {"aquasurf": AquaSurf, "random": RandomSearch, "evolution": RegularizedEvolution,
              "aquasurf-local": LocalAquaSurf}
SURROGATE_STRATEGIES = ("aquasurf", "aquasurf-local")  # they take feature_set and embedding


def make_strategy(name: str, candidates: Candidates, *, seed: int, feature_set: str = "union",
                  embedding: np.ndarray | None = None, **options) -> Strategy:
  """A strategy by name ('aquasurf', 'random', 'evolution', 'aquasurf-local').

  `feature_set` and `embedding` (a precomputed surrogate.embed, shared across seeds and
  strategies since it is the costly part) concern the surrogate's strategies only; `options`
  go to the class (aquasurf: neighbors (the k of k-NN), failure_value; evolution:
  population_size, sample_size, max_attempts, choices; aquasurf-local: aquasurf's, parents,
  choices).
  """
  if name not in STRATEGIES:
    raise ValueError(f"unknown strategy {name!r}; expected one of {tuple(STRATEGIES)}")
  if name in SURROGATE_STRATEGIES:
    return STRATEGIES[name](candidates, seed=seed, feature_set=feature_set,
                            embedding=embedding, **options)
  return STRATEGIES[name](candidates, seed=seed, **options)
