"""Replays search strategies by what they cost in training epochs, with or without successive
halving, on a table's learning curves.

replay.py counts evaluations: every function trains fully. Successive halving
(engine/halving.py) stops most functions after a few epochs, so its searches are compared by
the epochs they train. Here each strategy proposes rounds as the live search does:

  without halving  every proposed function trains `num_epochs` (the curves' length) and its
                   final validation accuracy joins the strategy's history;
  with halving     a round of P functions trains to each rung's epoch in turn; at every rung but
                   the last, Fidelity.survivors (the very rule the search uses) picks, by the
                   validation accuracy after that epoch (curves[id, rung - 1]), those that go on.
                   A stopped function costs the epochs it trained and is never proposed again:
                   it goes to the strategy's `exclude`, never to its history (the surrogate fits
                   full trainings only), unless it had failed by its rung (no accuracy there):
                   the search records that as a failure, and so it joins the history as NaN.
                   The last rung's survivors join the history.

A function counts as found at the end of the round that trained it fully (the epochs spent by
then); the last round is cut to what the epoch budget still pays for in full, so nothing is
spent beyond it. Strategies, their seeds, aquasurf's per-seed UMAP layouts and the summary's
quantiles are replay.py's.

    variants = cost_replay.make_variants(("aquasurf", "random"), batches=(1, 27),
                                         fidelity=halving.Fidelity((2, 5, 10), 3))
    result = cost_replay.replay_by_cost(candidates, accuracies, curves, variants,
                                        seeds=range(20), epoch_budget=5000, tie=0.0023)
    result.summary()["aquasurf+halving"]["epochs_to_best"]
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from actbench.engine import halving
from actbench.search import replay as replay_lib
from actbench.search import strategies as strategies_lib


@dataclasses.dataclass(frozen=True)
class Variant:
  """One way to search: a strategy (a make_strategy name, or a key of the replay's
  factories), its round size, and successive halving or None. `name` defaults to the
  strategy's, "+halving" with halving, "@<batch>" for a batch above 1 without it."""
  strategy: str
  batch: int = 1
  fidelity: halving.Fidelity | None = None
  name: str = ""

  def __post_init__(self):
    if self.batch < 1:
      raise ValueError(f"a variant's batch must be positive, got {self.batch}")
    if not self.name:
      suffix = ("+halving" if self.fidelity is not None
                else f"@{self.batch}" if self.batch != 1 else "")
      object.__setattr__(self, "name", self.strategy + suffix)

  def to_json(self) -> dict:
    return {"strategy": self.strategy, "batch": self.batch,
            "rungs": None if self.fidelity is None else list(self.fidelity.rungs),
            "eta": None if self.fidelity is None else self.fidelity.eta}


def make_variants(strategies: Sequence[str], *, batches: Sequence[int] = (1,),
                  fidelity: halving.Fidelity | None = None,
                  population: int | None = None) -> list[Variant]:
  """Per strategy: one variant without halving per batch, and with `fidelity` one with
  halving over populations of `population` (default: the largest batch): halving selects
  within a round, so its round is the population."""
  result = []
  for name in strategies:
    result.extend(Variant(name, int(b)) for b in batches)
    if fidelity is not None:
      result.append(Variant(name, int(population or max(batches)), fidelity))
  return result


@dataclasses.dataclass(frozen=True)
class Round:
  """One round of a replay: what was proposed, trained fully and stopped early (each in
  proposal order), the epochs the round cost, and those stopped because they had failed by
  their rung (the search records them as failed: the strategy learns them as failures)."""
  proposed: tuple[int, ...]
  evaluated: tuple[int, ...]
  stopped: tuple[int, ...]
  epochs: int
  failed: tuple[int, ...] = ()


def halve(proposed: Sequence[int], curves: np.ndarray,
          fidelity: halving.Fidelity) -> tuple[list[int], list[int], list[int], int]:
  """(trained fully, stopped, failed when stopped, epochs) of one population under
  successive halving, as train.train_population runs it: the functions still training at a
  rung, in proposal order, are ranked by Fidelity.survivors on their accuracy after its epoch
  (a tie goes to the earlier proposal). A function stopped with no accuracy there (NaN: it
  had failed) is recorded as failed, not stopped. Every list is in proposal order."""
  active, spent, previous = list(proposed), 0, 0
  failed = set()
  for rung, epoch in enumerate(fidelity.rungs):
    spent += len(active) * (epoch - previous)
    previous = epoch
    if rung + 1 < len(fidelity.rungs):
      scores = curves[np.asarray(active, np.int64), epoch - 1] if active else []
      going_on = set(fidelity.survivors(scores))
      failed.update(i for k, i in enumerate(active)
                    if k not in going_on and np.isnan(scores[k]))
      active = [i for k, i in enumerate(active) if k in going_on]
  kept = set(active)
  return ([i for i in proposed if i in kept],
          [i for i in proposed if i not in kept and i not in failed],
          [i for i in proposed if i in failed], spent)


def round_cost(count: int, num_epochs: int, fidelity: halving.Fidelity | None) -> int:
  """Epochs a round of `count` functions trains (it never depends on which they are)."""
  return count * num_epochs if fidelity is None else fidelity.epochs(count)


def affordable(batch: int, left: int, num_epochs: int,
               fidelity: halving.Fidelity | None) -> int:
  """The largest round of at most `batch` functions that `left` epochs pay for in full (a
  round's cost grows with its size)."""
  count = batch
  while count and round_cost(count, num_epochs, fidelity) > left:
    count -= 1
  return count


def run_one(strategy, accuracies: np.ndarray, curves: np.ndarray, *, epoch_budget: int,
            batch: int = 1, fidelity: halving.Fidelity | None = None,
            stop_at: float = math.inf) -> list[Round]:
  """The rounds one strategy trains within `epoch_budget` epochs: until it runs out of
  classes, the budget pays for no further function, or a full training reaches `stop_at`.

  Raises:
    RuntimeError: the strategy proposed more than asked, or a class twice (one it proposed
      before, trained fully or stopped).
  """
  num_epochs = curves.shape[1]
  # Full trainings and failures (a failure at a rung is one at any fidelity), in record order.
  history: dict[int, float] = {}
  stopped: list[int] = []
  rounds: list[Round] = []
  spent, found = 0, -math.inf
  while found < stop_at:
    wanted = affordable(batch, epoch_budget - spent, num_epochs, fidelity)
    if not wanted:
      break
    proposed = [int(i) for i in strategy.propose(history, wanted, exclude=list(stopped))]
    if not proposed:
      break
    _check_proposal(strategy, proposed, wanted, history, stopped)
    if fidelity is None:
      evaluated, stops, failed, cost = (proposed, [], [],
                                        round_cost(len(proposed), num_epochs, None))
    else:
      evaluated, stops, failed, cost = halve(proposed, curves, fidelity)
    for index in proposed:  # in the order the search records them
      if index in failed:
        history[index] = math.nan
      elif index in evaluated:
        history[index] = float(accuracies[index])
        if history[index] > found:  # NaN, a failure, never counts
          found = history[index]
    stopped.extend(stops)
    spent += cost
    rounds.append(Round(tuple(proposed), tuple(evaluated), tuple(stops), cost, tuple(failed)))
  return rounds


def _check_proposal(strategy, proposed, wanted, history, stopped):
  name = type(strategy).__name__
  if len(proposed) > wanted:
    raise RuntimeError(f"{name} proposed {len(proposed)} classes when asked for {wanted}")
  seen = set(history) | set(stopped)
  for index in proposed:
    if index in seen:
      raise RuntimeError(f"{name} proposed class {index} twice")
    seen.add(index)


@dataclasses.dataclass
class CostRun:
  """One variant's replays, a row per seed.

  Attributes:
    epochs_to_best: (seeds,) epochs spent by the end of the round that trained fully a
      function tied with the table's best (within the replay's tie); NaN when not within the
      epoch budget.
    epochs_to_top1: (seeds,) the same for a function in the top 1%.
    best_so_far: (seeds, len(grid)) the best finite full-training accuracy known once each
      grid point's epochs are spent (rounds that ended by then); -inf before a first success.
    evaluations: (seeds,) functions trained fully.
    stopped: (seeds,) functions successive halving stopped early.
    epochs_spent: (seeds,) epochs trained in all (at most the budget).
    final_tied: (seeds,) whether the best found within the budget is tied with the table's
      (the same as epochs_to_best being reached: only a tied function makes a tied best).
  """
  epochs_to_best: np.ndarray
  epochs_to_top1: np.ndarray
  best_so_far: np.ndarray
  evaluations: np.ndarray
  stopped: np.ndarray
  epochs_spent: np.ndarray
  final_tied: np.ndarray


def _score(rounds: Sequence[Round], accuracies: np.ndarray, grid: np.ndarray, target: float,
           threshold: float) -> tuple:
  """One seed's CostRun row from its rounds."""
  spent = np.cumsum([r.epochs for r in rounds], dtype=np.int64)
  best_after = np.full(len(rounds), -math.inf)
  to_best = to_top1 = math.nan
  best = -math.inf
  for number, played in enumerate(rounds):
    values = accuracies[list(played.evaluated)]
    values = values[np.isfinite(values)]
    if values.size:
      best = max(best, float(values.max()))
      if math.isnan(to_best) and (values >= target).any():
        to_best = float(spent[number])
      if math.isnan(to_top1) and (values >= threshold).any():
        to_top1 = float(spent[number])
    best_after[number] = best
  curve = np.full(len(grid), -math.inf)
  if len(rounds):
    last = np.searchsorted(spent, grid, side="right") - 1  # the last round ended by then
    curve = np.where(last >= 0, best_after[np.maximum(last, 0)], -math.inf)
  return (to_best, to_top1, curve, sum(len(r.evaluated) for r in rounds),
          sum(len(r.stopped) for r in rounds), int(spent[-1]) if len(rounds) else 0,
          best >= target)


def default_grid(epoch_budget: int, points: int = 200) -> np.ndarray:
  """About `points` evenly spaced whole epochs up to the budget, the budget last."""
  step = max(1, math.ceil(epoch_budget / points))
  return np.unique(np.append(np.arange(step, epoch_budget + 1, step), epoch_budget))


def random_search_budget(accuracies, num_epochs: int, *, tie: float = 0.0,
                         share: float = 0.9) -> int:
  """Epochs by which random search without halving, one function at a time, has found a
  function tied with the best (within `tie`) in `share` of its seeds, in expectation: the
  smallest m with P(none of the T tied functions among the first m of a uniform permutation
  of all n classes) = C(n - m, T) / C(n, T) <= 1 - share, times num_epochs. A budget that
  lets the weakest strategy succeed mostly, so the others' epochs to the best are measured."""
  accuracies = np.asarray(accuracies, np.float64)
  finite = accuracies[np.isfinite(accuracies)]
  if not finite.size:
    raise ValueError("no finite accuracy in the table")
  n, tied = len(accuracies), int(np.sum(finite >= finite.max() - tie))
  missed, m = 1.0, 0
  while missed > 1.0 - share and m < n:
    m += 1
    missed *= max(0.0, (n - m + 1 - tied) / (n - m + 1))  # C(n-m, T) / C(n-m+1, T)
  return m * int(num_epochs)


@dataclasses.dataclass
class CostReplayResult:
  """Replays of several variants over the same seeds, by epochs.

  Attributes:
    runs: variant name -> CostRun.
    variants: variant name -> Variant.
    seeds, epoch_budget, feature_set, tie: the replay's settings.
    num_epochs: a full training (the curves' length).
    grid: the epochs best_so_far is sampled at.
    best_accuracy, top1_threshold: as replay.ReplayResult's.
  """
  runs: dict[str, CostRun]
  variants: dict[str, Variant]
  seeds: tuple[int, ...]
  epoch_budget: int
  num_epochs: int
  grid: np.ndarray
  feature_set: str
  best_accuracy: float
  top1_threshold: float
  tie: float = 0.0

  def __getitem__(self, name: str) -> CostRun:
    return self.runs[name]

  def summary(self) -> dict:
    """Per variant: q25, median, q75 and the fraction of seeds that got there ("reached") of
    epochs_to_best and epochs_to_top1 (inf: beyond the budget); "tied_at_budget", the
    fraction of seeds whose best within the epoch budget is tied with the table's; q25,
    median, q75 of that best ("final_best"), of the full trainings, of the functions stopped
    and of the epochs spent."""
    return {name: {"epochs_to_best": replay_lib._describe(run.epochs_to_best),
                   "epochs_to_top1": replay_lib._describe(run.epochs_to_top1),
                   "tied_at_budget": float(np.mean(run.final_tied)),
                   "final_best": replay_lib._describe(run.best_so_far[:, -1], reached=False),
                   "evaluations": replay_lib._describe(run.evaluations, reached=False),
                   "stopped": replay_lib._describe(run.stopped, reached=False),
                   "epochs_spent": replay_lib._describe(run.epochs_spent, reached=False)}
            for name, run in self.runs.items()}

  def to_json(self) -> dict:
    """A JSON-ready dict (json.dumps takes it with allow_nan=False): the settings, the
    variants, "summary", "grid" and "runs": name -> every CostRun array as nested lists.
    Non-finite numbers (-inf before a first success, not reached) are null."""
    return replay_lib.jsonable({
        "seeds": list(self.seeds), "epoch_budget": self.epoch_budget,
        "num_epochs": self.num_epochs, "feature_set": self.feature_set,
        "best_accuracy": self.best_accuracy, "top1_threshold": self.top1_threshold,
        "tie": self.tie, "variants": {n: v.to_json() for n, v in self.variants.items()},
        "summary": self.summary(), "grid": self.grid,
        "runs": {name: dataclasses.asdict(run) for name, run in self.runs.items()},
    })


def replay_by_cost(candidates: strategies_lib.Candidates, accuracies: np.ndarray,
                   curves: np.ndarray, variants: Sequence[Variant], *,
                   seeds: Sequence[int] = range(20), epoch_budget: int | None = None,
                   tie: float = 0.0, feature_set: str = "union",
                   embedding: np.ndarray | None = None,
                   strategy_options: Mapping[str, Mapping] | None = None,
                   factories: Mapping[str, replay_lib.StrategyFactory] | None = None,
                   layout_cache: str | None = None, grid: Sequence[int] | None = None,
                   stop_at_best: bool = True, progress: bool = False) -> CostReplayResult:
  """Replays variants against known accuracies and learning curves, counting epochs.

  Args:
    candidates: the table's classes and features.
    accuracies: (n,) final validation accuracy per class; NaN for a failed training.
    curves: (n, num_epochs) validation accuracy after each epoch, NaN once a function has
      failed; its last column is `accuracies`. Every halving's last rung must be num_epochs.
    variants: what to replay (make_variants); their names must differ.
    seeds: one replay per seed and variant.
    epoch_budget: epochs per replay; default random_search_budget(accuracies, num_epochs,
      tie=tie).
    tie, feature_set, embedding, strategy_options, layout_cache, stop_at_best, progress: as
      replay.replay's (strategy_options by strategy name; every variant of a strategy with
      the same seed uses the same layout).
    factories: strategy name -> factory(seed), for strategies make_strategy does not know.
    grid: the epochs best_so_far is sampled at (default_grid(epoch_budget) by default).
  """
  accuracies, best, threshold = replay_lib.table_targets(accuracies, len(candidates), tie)
  curves = np.asarray(curves, np.float64)
  if curves.ndim != 2 or curves.shape[0] != len(candidates) or curves.shape[1] < 1:
    raise ValueError(f"expected learning curves of shape ({len(candidates)}, epochs), got "
                     f"{curves.shape}")
  if not np.allclose(curves[:, -1], accuracies, rtol=0.0, atol=1e-6, equal_nan=True):
    raise ValueError("the curves' last epoch is not the final validation accuracy: are they "
                     "the validation accuracy curves of the same table?")
  num_epochs = curves.shape[1]
  names = [v.name for v in variants]
  if len(set(names)) != len(names):
    raise ValueError(f"variant names must differ, got {names}")
  for variant in variants:
    if variant.fidelity is not None and variant.fidelity.rungs[-1] != num_epochs:
      raise ValueError(f"{variant.name}: the last rung must be the full training "
                       f"({num_epochs} epochs), got rungs {list(variant.fidelity.rungs)}")
  if epoch_budget is None:
    epoch_budget = random_search_budget(accuracies, num_epochs, tie=tie)
  if epoch_budget < num_epochs:
    raise ValueError(f"an epoch budget of {epoch_budget} pays for no full training "
                     f"({num_epochs} epochs)")
  grid = default_grid(epoch_budget) if grid is None else np.asarray(grid, np.int64)
  target = best - tie
  seeds = tuple(int(s) for s in seeds)
  layouts = replay_lib.LayoutCache(candidates, feature_set, embedding, layout_cache)

  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  runs = {}
  with tqdm(total=len(variants) * len(seeds), disable=not progress, desc="replay") as bar:
    for variant in variants:
      rows = []
      for seed in seeds:
        bar.set_postfix_str(f"{variant.name} seed {seed}")
        strategy = replay_lib.build_strategy(
            variant.strategy, (factories or {}).get(variant.strategy), candidates, seed,
            layouts, strategy_options)
        rounds = run_one(strategy, accuracies, curves, epoch_budget=epoch_budget,
                         batch=variant.batch, fidelity=variant.fidelity,
                         stop_at=target if stop_at_best else math.inf)
        rows.append(_score(rounds, accuracies, grid, target, threshold))
        bar.update()
      runs[variant.name] = CostRun(*(np.stack(column) for column in zip(*rows)))
  return CostReplayResult(runs, {v.name: v for v in variants}, seeds, int(epoch_budget),
                          num_epochs, grid, feature_set, best, threshold, tie)


# The share of the trained functions that curve_rank_correlation's second figure ranks among:
# the functions a strategy that works proposes.
BEST_SHARE = 0.1


def curve_rank_correlation(curves: np.ndarray, accuracies: np.ndarray,
                           best: float = 1.0) -> list[float]:
  """Per epoch k (index k - 1), the Spearman rank correlation between the validation accuracy
  after epoch k and the final one, over the functions finite at both: how well a rung at
  epoch k ranks the functions halving must keep. `best` < 1 ranks among that fraction of the
  functions with a final accuracy only, the highest (at least 2): the functions a good
  strategy proposes, where curves that cross late make halving lose. NaN where fewer than 2
  functions, or a constant column, leave nothing to rank."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  curves = np.asarray(curves, np.float64)
  accuracies = np.asarray(accuracies, np.float64)
  chosen = np.isfinite(accuracies)
  if best < 1.0:
    ranked = np.flatnonzero(chosen)[np.argsort(-accuracies[chosen], kind="stable")]
    chosen = np.zeros_like(chosen)
    chosen[ranked[:max(2, math.ceil(best * len(ranked)))]] = True
  result = []
  for k in range(curves.shape[1]):
    both = np.isfinite(curves[:, k]) & chosen
    if both.sum() < 2:
      result.append(math.nan)
      continue
    with warnings.catch_warnings():  # a constant column: NaN, said above
      warnings.simplefilter("ignore")
      rho = stats.spearmanr(curves[both, k], accuracies[both])[0]
    result.append(float(rho))
  return result
