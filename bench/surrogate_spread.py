"""What the surrogate's Spearman measures on an Act-Bench-Digits table (issue 15): how much of it
is telling trained functions from broken ones, how well it ranks the functions that train, and
whether an ensemble of UMAP layouts ranks better than one.

    python -m bench.surrogate_spread [--tables digits-v1,digits] [--draws 40] [--layouts 3]
        [--layout-cache DIR] [--evaluations search.evaluations.jsonl]

Per table, for the union surrogate fitted on 100 functions with finite accuracy (the others
predicted; --draws random draws, as surrogate.quality does), prints the median Spearman:
  - against the accuracy, over every function not fitted on (the figure of the report);
  - over the functions above 90% only (those a search is choosing between);
  - against "above 90%" as a 0/1 label (trained or not);
  - of the mean prediction of --layouts UMAP random states (42, 43, ...) against one layout's.
Layouts are kept in --layout-cache (the replay's `<workdir>/layouts` works: same names).

With --evaluations (a build's search.evaluations.jsonl, which keeps each fold's accuracy),
also prints the table's own reliability: the Spearman between the mean over two folds and over
the other three (every split), stepped up to five folds (Spearman-Brown), and its square root,
about the highest Spearman any predictor of the true accuracy can reach against the table.
"""

import argparse
import itertools
import json
import os

import numpy as np
from scipy import stats

from actbench import tables
from actbench.search import replay, surrogate
from actbench.search.candidates import Candidates

TRAINED = 0.9


def _layouts(candidates, count: int, cache: str) -> list[surrogate.Surrogate]:
  """The union surrogates of random states 42, 43, ...: those the replays use."""
  layouts = replay.LayoutCache(candidates, "union", cache=cache)
  return [layouts.get(seed) for seed in range(count)]


def _median_spearman(predict, accuracies, pool, draws, subset=None, label=False):
  values = []
  for seed in range(draws):
    train = np.random.default_rng(seed).choice(pool, 100, replace=False)
    test = np.setdiff1d(pool, train)
    predicted, actual = predict({int(i): accuracies[i] for i in train})[test], accuracies[test]
    keep = np.ones(len(test), bool) if subset is None else subset(actual)
    target = (actual > TRAINED) if label else actual
    values.append(stats.spearmanr(predicted[keep], target[keep]).statistic)
  return float(np.median(values))


def reliability(path: str) -> tuple[float, float, float]:
  """(split-half Spearman, stepped up to every fold, its square root) from a build's store."""
  rows = []
  with open(path) as f:
    for line in f:
      runs = json.loads(json.loads(line)["per_seed"])
      values = [run["validation_accuracy"] for run in sorted(runs, key=lambda r: r["fold"])]
      if not any(run["diverged"] for run in runs) and np.all(np.isfinite(values)):
        rows.append(values)
  folds = np.asarray(rows)
  width = folds.shape[1]
  halves = []
  for half in itertools.combinations(range(width), width // 2):
    other = [i for i in range(width) if i not in half]
    halves.append(stats.spearmanr(folds[:, list(half)].mean(1),
                                  folds[:, other].mean(1)).statistic)
  split = float(np.mean(halves))
  whole = 2 * split / (1 + split)
  return split, whole, float(np.sqrt(whole))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tables", default="digits-v1,digits")
  parser.add_argument("--draws", type=int, default=40)
  parser.add_argument("--layouts", type=int, default=3)
  parser.add_argument("--layout-cache", default=os.path.join("/tmp", "actbench-layouts"))
  parser.add_argument("--evaluations", default="")
  args = parser.parse_args()
  for name in args.tables.split(","):
    table = tables.load(name)
    accuracies = table.accuracy("validation")
    candidates = Candidates.from_table(table)
    models = _layouts(candidates, args.layouts, args.layout_cache)
    pool = np.flatnonzero(models[0].eligible & np.isfinite(accuracies))
    trained = float(np.mean(accuracies[pool] > TRAINED))
    one = models[0].predict
    print(f"{name}: {len(pool)} functions with finite accuracy and features, "
          f"{100 * trained:.0f}% of them above {100 * TRAINED:.0f}%")
    print(f"  Spearman, every function:      "
          f"{_median_spearman(one, accuracies, pool, args.draws):.3f}")
    print(f"  Spearman, those above 90%:     "
          f"{_median_spearman(one, accuracies, pool, args.draws, lambda a: a > TRAINED):.3f}")
    print(f"  Spearman with 'above 90%':     "
          f"{_median_spearman(one, accuracies, pool, args.draws, label=True):.3f}")
    singles = [_median_spearman(m.predict, accuracies, pool, args.draws) for m in models]
    ensemble = _median_spearman(
        lambda history, models=models: np.mean([m.predict(history) for m in models], 0),
        accuracies, pool, args.draws)
    print(f"  {len(models)} layouts one by one: " + " ".join(f"{s:.3f}" for s in singles)
          + f"; their mean prediction: {ensemble:.3f}")
  if args.evaluations:
    split, whole, ceiling = reliability(args.evaluations)
    print(f"{args.evaluations}: split-half Spearman {split:.3f}, all folds {whole:.3f}, "
          f"highest reachable Spearman about {ceiling:.3f}")


if __name__ == "__main__":
  main()
