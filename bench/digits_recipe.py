"""Choosing Act-Bench-Digits' training recipe on the 8 baselines only (issue 15).

    python -m bench.digits_recipe [--seeds 3] [--folds 5] [--recipes v1,sgd10,adam10]

Trains the 8 baseline activations with each candidate recipe, every seed on every fold of a
k-fold cross-validation over digits' 1,437 non-test images, and prints per recipe: each
baseline's cross-validated accuracy (mean over seeds), the weakest baseline, how stable the
baselines' ranking is between seeds (mean Spearman of every pair of seeds' accuracies), the
spread between seeds of one function's cross-validated accuracy (its standard error when the
table trains one seed), diverged runs, and the wall time. The searched functions are
never looked at: the recipe is chosen here and then the table is built with it.
"""

import argparse
import itertools
import time

import numpy as np
from scipy import stats

from actbench.engine import train
from actbench.expr import operators
from configs import digits_bench_v1

# name -> config.train overrides on top of v1's recipe (configs/digits_bench_v1.py), trained
# with v2's cross-validation.
RECIPES = {
    "v1": dict(num_epochs=3, optimizer="sgd", learning_rate=0.02, momentum=0.9,
               grad_clip_norm=0.0),
    "sgd6": dict(num_epochs=6, optimizer="sgd", learning_rate=0.05, momentum=0.9,
                 grad_clip_norm=1.0, warmup_epochs=1.0),
    "sgd10": dict(num_epochs=10, optimizer="sgd", learning_rate=0.05, momentum=0.9,
                  grad_clip_norm=1.0, warmup_epochs=1.0),
    "adam6": dict(num_epochs=6, optimizer="adam", learning_rate=0.003, grad_clip_norm=1.0,
                  warmup_epochs=1.0),
    "adam10": dict(num_epochs=10, optimizer="adam", learning_rate=0.003, grad_clip_norm=1.0,
                   warmup_epochs=1.0),
    "adam8-lr01": dict(num_epochs=8, optimizer="adam", learning_rate=0.01, grad_clip_norm=1.0,
                       warmup_epochs=1.0),
    "adam10-lr01": dict(num_epochs=10, optimizer="adam", learning_rate=0.01,
                        grad_clip_norm=1.0, warmup_epochs=1.0),
    "adam8-b32": dict(num_epochs=8, optimizer="adam", learning_rate=0.003, batch_size=32,
                      grad_clip_norm=1.0, warmup_epochs=1.0),
}


def recipe_config(recipe: str, folds: int):
  config = digits_bench_v1.get_config()
  config.dataset.folds = folds
  config.train.divergence = "chance"
  for field, value in RECIPES[recipe].items():
    config.train[field] = value
  return config


def evaluate(recipe: str, seeds: int, folds: int) -> dict:
  config = recipe_config(recipe, folds)
  names = [f"{b}(x)" for b in operators.BASELINES]
  start = time.perf_counter()
  result = train.train_population(config, names, list(range(seeds)))
  wall = time.perf_counter() - start
  runs = result.members()
  # accuracy[b, s]: baseline b, seed s, mean over folds (a diverged fold scores chance)
  accuracy = np.zeros((len(names), seeds))
  diverged = 0
  for row in runs:
    value = 0.1 if row["diverged"] else row["validation_accuracy"]
    diverged += bool(row["diverged"])
    accuracy[names.index(row["activation"]), row["seed"]] += value / folds
  pairs = list(itertools.combinations(range(seeds), 2))
  rank_stability = (np.mean([stats.spearmanr(accuracy[:, a], accuracy[:, b])[0]
                             for a, b in pairs]) if pairs else np.nan)
  return {"names": names, "accuracy": accuracy, "diverged": diverged, "runs": len(runs),
          "rank_stability": rank_stability, "wall_s": wall}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--folds", type=int, default=5)
  parser.add_argument("--recipes", default=",".join(RECIPES))
  args = parser.parse_args()
  for recipe in args.recipes.split(","):
    figures = evaluate(recipe, args.seeds, args.folds)
    accuracy = figures["accuracy"]
    mean = accuracy.mean(axis=1)
    seed_sd = accuracy.std(axis=1, ddof=1) if args.seeds > 1 else np.full(len(mean), np.nan)
    print(f"\n{recipe}: {RECIPES[recipe]}")
    for name, m, sd in zip(figures["names"], mean, seed_sd):
      print(f"  {name:12s} {100 * m:6.2f}%  (seed sd {100 * sd:.2f})")
    print(f"  weakest baseline {100 * mean.min():.2f}%, baseline ranking between seeds: "
          f"Spearman {figures['rank_stability']:.3f}, median seed sd "
          f"{100 * np.nanmedian(seed_sd):.2f} points, diverged runs {figures['diverged']} of "
          f"{figures['runs']}, {figures['wall_s']:.0f} s")


if __name__ == "__main__":
  main()
