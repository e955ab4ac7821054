"""Replays search strategies against a table's known accuracies.

Each strategy proposes `batch` classes at a time for each seed; an evaluation is a lookup in
the table (NaN: the training failed). The result records, per strategy and seed, the best
accuracy found after each evaluation and how many evaluations it took to find the table's
best function (or one tied with it: within `tie` of its accuracy, e.g. one standard error of
the table's accuracies) and a top-1% function.

For aquasurf a seed changes the UMAP random_state (42 + seed, the paper's 42 for seed 0):
otherwise its proposals, deterministic given the embedding, would be the same for every seed.
The neighbour graph does not depend on the random state and is computed once; each seed's
layout is computed once and shared by every aquasurf run with that seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import math
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from actbench.search import featurize
from actbench.search import strategies as strategies_lib
from actbench.search import surrogate

QUANTILES = (0.25, 0.5, 0.75)


@dataclasses.dataclass
class StrategyRun:
  """One strategy's replays, a row per seed.

  Attributes:
    proposals: (seeds, budget) int class ids in evaluation order; -1 past the end when the
      strategy ran out of classes.
    best_so_far: (seeds, budget) best finite accuracy after each evaluation; -inf until one
      succeeds; carried on past the end.
    evaluations_to_best: (seeds,) evaluations (1-based) until the table's best function (or
      one tied with it, within the replay's `tie`) was evaluated; NaN when not within the
      budget.
    evaluations_to_top1: (seeds,) the same for the first function in the top 1%.
  """
  proposals: np.ndarray
  best_so_far: np.ndarray
  evaluations_to_best: np.ndarray
  evaluations_to_top1: np.ndarray


def quantile(values, q: float) -> float:
  """Linear-interpolation quantile where NaN (not reached) ranks above every number: inf when
  the quantile reaches into the runs that did not get there (and -inf into -inf values)."""
  ordered = np.sort(np.where(np.isnan(values), np.inf, np.asarray(values, np.float64)))
  position = q * (len(ordered) - 1)
  low, high = math.floor(position), math.ceil(position)
  fraction = position - low
  if fraction == 0:
    return float(ordered[low])
  if ordered[high] == math.inf:
    return math.inf
  if ordered[low] == -math.inf:  # best_so_far before any success
    return -math.inf
  return float(ordered[low] + fraction * (ordered[high] - ordered[low]))


def _describe(values, reached: bool = True) -> dict:
  """Quartiles; with `reached`, also the fraction of seeds that got there (not NaN)."""
  values = np.asarray(values, np.float64)
  result = {"q25": quantile(values, 0.25), "median": quantile(values, 0.5),
            "q75": quantile(values, 0.75)}
  if reached:
    result["reached"] = float(np.mean(~np.isnan(values)))
  return result


def jsonable(value):
  """Arrays to lists, non-finite numbers to null (JSON has neither)."""
  if isinstance(value, dict):
    return {str(k): jsonable(v) for k, v in value.items()}
  if isinstance(value, np.ndarray):
    value = value.tolist()
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, np.integer):
    return int(value)
  return value


@dataclasses.dataclass
class ReplayResult:
  """Replays of several strategies over the same seeds.

  Attributes:
    runs: strategy name -> StrategyRun.
    seeds, budget, batch, feature_set: the replay's settings.
    best_accuracy: the table's best finite accuracy.
    top1_threshold: the 99th percentile of the finite accuracies (numpy's linear rule); a
      function at or above it is in the top 1%.
    tie: a function within this much of best_accuracy counts as the best.
    fisher_budget: the featurize.Plan the surrogate strategies replayed under, as a dict
      (None: every class had Fisher features).
  """
  runs: dict[str, StrategyRun]
  seeds: tuple[int, ...]
  budget: int
  batch: int
  feature_set: str
  best_accuracy: float
  top1_threshold: float
  tie: float = 0.0
  fisher_budget: dict | None = None

  def __getitem__(self, strategy: str) -> StrategyRun:
    return self.runs[strategy]

  def summary(self) -> dict:
    """Per strategy: q25, median, q75 and the fraction of seeds that got there ("reached")
    for evaluations_to_best and evaluations_to_top1 (inf: beyond the budget), and q25,
    median, q75 of the best accuracy at the end of the budget ("final_best")."""
    return {name: {"evaluations_to_best": _describe(run.evaluations_to_best),
                   "evaluations_to_top1": _describe(run.evaluations_to_top1),
                   "final_best": _describe(run.best_so_far[:, -1], reached=False)}
            for name, run in self.runs.items()}

  def to_json(self) -> dict:
    """A JSON-ready dict (json.dumps takes it as is): the settings, "summary", and
    "strategies": name -> every StrategyRun array as nested lists. Non-finite numbers (-inf
    before a first success, not reached) are null."""
    return jsonable({
        "seeds": list(self.seeds), "budget": self.budget, "batch": self.batch,
        "feature_set": self.feature_set, "best_accuracy": self.best_accuracy,
        "top1_threshold": self.top1_threshold, "tie": self.tie,
        "fisher_budget": self.fisher_budget, "summary": self.summary(),
        "strategies": {name: dataclasses.asdict(run) for name, run in self.runs.items()},
    })


def run_one(strategy, accuracies: np.ndarray, budget: int, batch: int = 1,
            stop_at: float = math.inf) -> np.ndarray:
  """The class ids one strategy evaluates within the budget, in order (fewer when it runs
  out of classes, or once it has found an accuracy of at least `stop_at`)."""
  history: dict[int, float] = {}
  found = -math.inf  # the best finite accuracy so far (NaN, a failure, never counts)
  while len(history) < budget and found < stop_at:
    wanted = min(batch, budget - len(history))
    proposed = strategy.propose(history, wanted)
    if not proposed:
      break
    if len(proposed) > wanted:
      raise RuntimeError(f"{type(strategy).__name__} proposed {len(proposed)} classes when "
                         f"asked for {wanted}")
    for index in proposed:
      if index in history:
        raise RuntimeError(f"{type(strategy).__name__} proposed class {index} twice")
      history[index] = float(accuracies[index])
      if history[index] > found:
        found = history[index]
  return np.fromiter(history, np.int64, len(history))


def _first_reaching(found: np.ndarray) -> float:
  """1-based position of the first True, NaN if none."""
  hits = np.flatnonzero(found)
  return float(hits[0] + 1) if len(hits) else math.nan


def _score(order: np.ndarray, accuracies: np.ndarray, budget: int, best: float,
           threshold: float) -> tuple[np.ndarray, np.ndarray, float, float]:
  proposals = np.full(budget, -1, np.int64)
  proposals[:len(order)] = order
  values = accuracies[order]
  values = np.where(np.isfinite(values), values, -np.inf)  # a failure never improves
  curve = np.full(budget, -np.inf)
  if len(order):
    curve[:len(order)] = np.maximum.accumulate(values)
    curve[len(order):] = curve[len(order) - 1]
  return proposals, curve, _first_reaching(values >= best), _first_reaching(
      values >= threshold)


StrategyFactory = Callable[[int], "strategies_lib.Strategy"]


def replay(candidates: strategies_lib.Candidates, accuracies: np.ndarray,
           strategies: Sequence[str] | Mapping[str, StrategyFactory] = (
               "aquasurf", "random", "evolution"), *,
           seeds: Sequence[int] = range(20), budget: int = 100, batch: int = 1,
           feature_set: str = "union", embedding: np.ndarray | None = None,
           progress: bool = False,
           strategy_options: Mapping[str, Mapping] | None = None,
           stop_at_best: bool = True, tie: float = 0.0,
           layout_cache: str | None = None,
           fisher_budget: featurize.Plan | None = None) -> ReplayResult:
  """Replays strategies against known accuracies.

  Args:
    candidates: the table's classes and features.
    accuracies: (n,) validation accuracy per class; NaN for a failed training.
    strategies: names for make_strategy, or name -> factory(seed) returning a strategy.
    seeds: one replay per seed and strategy.
    budget: evaluations per replay.
    batch: classes proposed per call (parallel workers).
    feature_set: aquasurf's surrogate features.
    embedding: one precomputed embedding for every aquasurf seed (then aquasurf replays the
      same for every seed); by default each seed gets its own layout, random_state 42 + seed.
    progress: a tqdm bar over strategy x seed.
    strategy_options: strategy name -> keyword options for make_strategy, e.g.
      {"evolution": {"population_size": 10}}.
    stop_at_best: end a replay once it has found the table's best function: nothing after
      changes its curve or its counts, and a budget as large as the table (so that random
      search reaches the best too) stays affordable. Its later proposals are -1.
    tie: a function whose accuracy is within `tie` of the best counts as the best (0: only
      the best accuracy itself), so that functions the table cannot tell apart are one target.
    layout_cache: a directory where each seed's UMAP layout is kept (by the features' digest)
      and found again by later replays; None: computed every time.
    fisher_budget: replay the surrogate strategies as a search with this Fisher budget runs
      (featurize.BudgetedStrategy: the table's Fisher rows of the classes its rounds pick,
      embedded again after each round); the plan's seed is each replay's seed.
  """
  accuracies, best, threshold = table_targets(accuracies, len(candidates), tie)
  if budget < 1 or batch < 1:
    raise ValueError(f"budget and batch must be positive, got {budget} and {batch}")
  target = best - tie
  seeds = tuple(int(s) for s in seeds)
  if isinstance(strategies, Mapping):
    factories = dict(strategies)
  else:
    factories = {name: None for name in strategies}
  layouts = LayoutCache(candidates, feature_set, embedding, layout_cache)

  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  runs = {}
  with tqdm(total=len(factories) * len(seeds), disable=not progress, desc="replay") as bar:
    for name, factory in factories.items():
      rows = []
      for seed in seeds:
        bar.set_postfix_str(f"{name} seed {seed}")
        strategy = build_strategy(name, factory, candidates, seed, layouts,
                                  strategy_options, fisher_budget)
        order = run_one(strategy, accuracies, budget, batch,
                        stop_at=target if stop_at_best else math.inf)
        rows.append(_score(order, accuracies, budget, target, threshold))
        bar.update()
      runs[name] = StrategyRun(*(np.stack(column) for column in zip(*rows)))
  return ReplayResult(runs, seeds, budget, batch, feature_set, best, threshold, tie,
                      None if fisher_budget is None else dataclasses.asdict(fisher_budget))


def table_targets(accuracies, count: int, tie: float) -> tuple[np.ndarray, float, float]:
  """(accuracies as float64, the best finite accuracy, the top-1% threshold: the 99th
  percentile of the finite ones), once the table and `tie` are checked."""
  accuracies = np.asarray(accuracies, np.float64)
  if accuracies.shape != (count,):
    raise ValueError(f"expected {count} accuracies, got shape {accuracies.shape}")
  finite = accuracies[np.isfinite(accuracies)]
  if not len(finite):
    raise ValueError("no finite accuracy in the table")
  if not 0.0 <= tie < 1.0:
    raise ValueError(f"tie must be an accuracy difference in [0, 1), got {tie}")
  return accuracies, float(finite.max()), float(np.percentile(finite, 99))


def build_strategy(name: str, factory: StrategyFactory | None,
                   candidates: strategies_lib.Candidates, seed: int, layouts: LayoutCache,
                   strategy_options: Mapping[str, Mapping] | None = None,
                   fisher_budget: featurize.Plan | None = None) -> strategies_lib.Strategy:
  """Strategy `name` for one seed as a replay runs it: factory(seed) when given, else
  make_strategy with strategy_options[name], the surrogate's strategies on the seed's layout
  (`layouts`, which also says the feature set) or under a Fisher budget."""
  if factory is not None:
    return factory(seed)
  options = dict((strategy_options or {}).get(name, {}))
  if name in strategies_lib.SURROGATE_STRATEGIES:
    if fisher_budget is not None:
      return _budgeted(name, candidates, seed, layouts.feature_set, fisher_budget, options)
    options.update(feature_set=layouts.feature_set, embedding=layouts.get(seed))
  return strategies_lib.make_strategy(name, candidates, seed=seed, **options)


def _budgeted(name, candidates, seed, feature_set, plan, options):
  """Strategy `name` over the classes a Fisher budget features as the replay goes."""
  random_state = surrogate.DEFAULT_RANDOM_STATE + seed

  def make(layout):
    return strategies_lib.make_strategy(name, candidates, seed=seed, feature_set=feature_set,
                                        embedding=layout, **options)
  return featurize.BudgetedStrategy(candidates, dataclasses.replace(plan, seed=seed), make,
                                    feature_set=feature_set, random_state=random_state)


class LayoutCache:
  """Each seed's surrogate (random_state 42 + seed), built on first use from one shared
  neighbour graph; with a `cache` directory, layouts are kept there as .npy files named by the
  features' digest, so a replay run again (other strategies, another tie) does not refit UMAP.
  `embedding` (or None): one fixed layout for every seed instead."""

  def __init__(self, candidates, feature_set: str, embedding=None, cache: str | None = None):
    self.candidates, self.feature_set = candidates, feature_set
    self.fixed = None if embedding is None else surrogate.Surrogate(embedding)
    self.graph = None
    self.cache: dict[int, surrogate.Surrogate] = {}
    self.directory = cache
    self._digest = None

  def _path(self, random_state: int) -> str | None:
    if self.directory is None:
      return None
    if self._digest is None:
      # The features and what lays them out: another umap-learn may place them elsewhere.
      digest = hashlib.sha256(importlib.metadata.version("umap-learn").encode())
      for array in (self.candidates.outputs, self.candidates.fisher):
        digest.update(np.ascontiguousarray(array).tobytes())
      self._digest = digest.hexdigest()[:16]
    return os.path.join(self.directory,
                        f"layout-{self.feature_set}-{random_state}-{self._digest}.npy")

  def get(self, seed: int) -> surrogate.Surrogate:
    if self.fixed is not None:
      return self.fixed
    if self.feature_set == "raw":
      seed = 0  # no random state
    if seed not in self.cache:
      random_state = surrogate.DEFAULT_RANDOM_STATE + seed
      path = self._path(random_state)
      if path is not None and os.path.exists(path):
        layout = np.load(path)
      else:
        if self.feature_set != "raw" and self.graph is None:
          self.graph = surrogate.fuzzy_graph(self.candidates, self.feature_set)
        layout = surrogate.embed(self.candidates, self.feature_set, random_state=random_state,
                                 graph=self.graph)
        if path is not None:
          os.makedirs(self.directory, exist_ok=True)
          partial = f"{path}.{os.getpid()}.tmp.npy"
          np.save(partial, layout)
          os.replace(partial, path)  # whole or absent, whoever else writes it
      self.cache[seed] = surrogate.Surrogate(layout)
    return self.cache[seed]
