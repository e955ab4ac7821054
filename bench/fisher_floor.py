"""Fisher features with and without a relative eigenvalue floor (issue 15): how much roundoff
moves them, and how well the surrogate ranks functions with each.

    python -m bench.fisher_floor [--tables digits-v1,digits] [--floors 0,1e-6,clamp:1e-6]

A floor is a fraction of each factor's largest eigenvalue below which eigenvalues are dropped
(`1e-6`) or clamped to it (`clamp:1e-6`); 0 keeps every positive one (the paper's features).
For every function of the tables (they share the benchmark space) and every floor, computes the
K-FAC features of configs/digits_bench.py twice: as the table does (examples in chunks of 32)
and with chunks of 16, which only changes the order of float32 sums. Prints per floor:
  - roundoff: the mean absolute change of a feature between the two, and the share of
    functions whose feature vector changes by more than 1e-3 anywhere;
  - per table, the median Spearman (Kendall) of the surrogate fitted on 100 functions (10 draws
    x --layouts UMAP random states) with the union and the Fisher features alone.
Features are cached in --cache (an .npz per floor and chunk size), so reruns only re-rank.
"""

import argparse
import os
import time

import numpy as np

from actbench import tables
from actbench.fisher import experiment
from actbench.search import loop, replay, surrogate
from actbench.search.candidates import Candidates
from configs import digits_bench


def fisher_rows(classes, floor: float, mode: str, chunk: int, cache: str,
                eigenvalues: str = "host") -> np.ndarray:
  """The table's Fisher rows recomputed with this floor, chunk size and place of the factor
  eigenvalues (`config.fisher.eigenvalues`), class by class."""
  names = [members[0] for members in classes]
  tag = f"{mode}{floor:g}" if floor else "none"
  if eigenvalues != "host":
    tag += f"-{eigenvalues}"
  path = os.path.join(cache, f"fisher-floor-{tag}-chunk{chunk}.npz")
  if os.path.exists(path):
    with np.load(path) as saved:
      if list(saved["names"]) == list(names):
        return saved["features"]
  config = digits_bench.get_config()
  config.fisher.eigenvalue_floor = floor
  config.fisher.floor_mode = mode
  config.fisher.batch_chunk = chunk
  config.fisher.eigenvalues = eigenvalues
  # One program over the benchmark space, as the benchmark computes them (relu(x)'s class as
  # add(relu(x),zero(x))), rather than a table of 2,791 whole functions.
  config.population.schema = config.search.space
  start = time.perf_counter()
  result = experiment.features(config, list(loop.trainable_names(classes, config.search.space)))
  print(f"  features, floor {tag}, chunks of {chunk}: {len(names)} functions in "
        f"{time.perf_counter() - start:.0f} s, {len(result.failed)} failed", flush=True)
  os.makedirs(cache, exist_ok=True)
  np.savez(path, names=np.asarray(names), features=result.features)
  return result.features


def ranking(table, fisher: np.ndarray, feature_set: str, layouts: int) -> tuple[float, float]:
  candidates = Candidates.from_table(table)
  candidates = Candidates(candidates.classes, candidates.outputs, fisher)
  accuracies = table.accuracy("validation")
  spearman, kendall = [], []
  # One neighbour graph for every layout (random states 42, 43, ...), as the replays use.
  cache = replay.LayoutCache(candidates, feature_set)
  for layout in range(layouts):
    quality = surrogate.quality(cache.get(layout), accuracies, [100], seeds=range(10))
    spearman.extend(quality["spearman"][0])
    kendall.extend(quality["kendall"][0])
  return float(np.nanmedian(spearman)), float(np.nanmedian(kendall))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tables", default="digits-v1,digits")
  parser.add_argument("--floors", default="0,1e-6,clamp:1e-6,clamp:1e-5")
  parser.add_argument("--layouts", type=int, default=3)
  parser.add_argument("--cache", default=os.path.join("/tmp", "actbench-fisher-floor"))
  args = parser.parse_args()
  loaded = {name: tables.load(name) for name in args.tables.split(",")}
  first = next(iter(loaded.values()))
  names, classes = list(first.names), first.classes()
  for name, table in loaded.items():
    if list(table.names) != names:
      raise SystemExit(f"{name} holds other functions than {args.tables.split(',')[0]}")
  for text in args.floors.split(","):
    mode, _, value = text.rpartition(":")
    mode, floor = mode or "drop", float(value)
    rows = fisher_rows(classes, floor, mode, 32, args.cache)
    other = fisher_rows(classes, floor, mode, 16, args.cache)
    both = np.isfinite(rows).all(axis=1) & np.isfinite(other).all(axis=1)
    change = np.abs(rows[both] - other[both])
    print(f"floor {text}: roundoff moves a feature by {change.mean():.2e} on average; "
          f"{np.mean(change.max(axis=1) > 1e-3):.1%} of {both.sum()} functions by more than "
          f"1e-3 somewhere; {np.sum(~np.isfinite(rows).all(axis=1))} without features")
    for name, table in loaded.items():
      for feature_set in ("union", "fisher"):
        spearman, kendall = ranking(table, rows, feature_set, args.layouts)
        print(f"  {name:10s} {feature_set:7s} Spearman {spearman:.3f} (Kendall {kendall:.3f})",
              flush=True)


if __name__ == "__main__":
  main()
