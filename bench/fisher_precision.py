"""Where the Fisher factors' eigenvalues are computed (issue 16): on the host in float64 (the
default), on the device in float64 or in float32. What each does to the features, and to the
surrogate's ranking.

    python -m bench.fisher_precision [--tables digits-v1,digits]
                                     [--modes host,device,device_float32] [--allcnnc 32]
    python -m bench.fisher_precision --tables '' --allcnnc 16   # timing only

For every function of the tables (they share the benchmark space) and every mode of
`config.fisher.eigenvalues`, computes the K-FAC features of configs/digits_bench.py (cached in
--cache, shared with bench.fisher_floor). Prints per mode:
  - the change against 'host': the mean absolute change of a feature, and the share of
    functions whose feature vector moves by more than 1e-3 anywhere; beside it the roundoff
    'host' already has (chunks of 32 against 16, which only reorders float32 sums);
  - per table, the median Spearman (Kendall) of the surrogate fitted on 100 functions (10
    draws x --layouts UMAP random states) with the union and with the Fisher features alone.
With --allcnnc N, the same change for N functions of the benchmark space in All-CNN-C at batch
128 (random CIFAR-shaped images, as bench.bench_fisher), whose factors are up to 1729 x 1729,
and each mode's seconds per function on this machine.
"""

import argparse
import os
import time

import numpy as np

from actbench import fisher, tables
from actbench.engine import population
from bench import bench_fisher, fisher_floor


def change(rows: np.ndarray, reference: np.ndarray) -> str:
  both = np.isfinite(rows).all(axis=1) & np.isfinite(reference).all(axis=1)
  moved = np.abs(rows[both] - reference[both])
  differ = np.sum(np.isfinite(rows).all(axis=1) != np.isfinite(reference).all(axis=1))
  share = np.mean(moved.max(axis=1) > 1e-3)
  return (f"features move by {moved.mean():.2e} on average, {share:.1%} of {both.sum()} "
          f"functions by more than 1e-3 somewhere; {differ} differ in having features at all")


def allcnnc_rows(count: int, mode: str) -> tuple[np.ndarray, float]:
  rng = np.random.default_rng(0)
  images = rng.standard_normal((128, 32, 32, 3)).astype(np.float32)
  labels = rng.integers(0, 10, 128)
  names = bench_fisher.population_names(count)
  encoding = population.FunctionTable.of(names)
  start = time.perf_counter()
  result = fisher.population_features(bench_fisher.make_allcnnc, encoding,
                                      encoding.encode(names), images, labels,
                                      eigenvalues=mode)
  seconds = time.perf_counter() - start - result.seconds.get("compile", 0.0)
  return result.features, seconds / count


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tables", default="digits-v1,digits", help="'' for none")
  parser.add_argument("--modes", default="host,device,device_float32")
  parser.add_argument("--layouts", type=int, default=3)
  parser.add_argument("--allcnnc", type=int, default=0, metavar="N")
  parser.add_argument("--cache", default=os.path.join("/tmp", "actbench-fisher-floor"))
  args = parser.parse_args()
  modes = args.modes.split(",")
  if args.tables:
    compare_on_tables(args.tables.split(","), modes, args.layouts, args.cache)
  if args.allcnnc:
    reference = None
    for mode in modes:
      rows, per_function = allcnnc_rows(args.allcnnc, mode)
      reference = rows if reference is None else reference
      print(f"All-CNN-C, {mode}: {per_function:.2f} s per function without the compilation; "
            f"against {modes[0]}, {change(rows, reference)}", flush=True)


def compare_on_tables(names, modes, layouts: int, cache: str):
  loaded = {name: tables.load(name) for name in names}
  first = next(iter(loaded.values()))
  classes = first.classes()
  for name, table in loaded.items():
    if list(table.names) != list(first.names):
      raise SystemExit(f"{name} holds other functions than {names[0]}")
  host = fisher_floor.fisher_rows(classes, 0.0, "drop", 32, cache)
  other_chunks = fisher_floor.fisher_rows(classes, 0.0, "drop", 16, cache)
  print(f"roundoff of host (chunks of 32 against 16): {change(other_chunks, host)}")
  for mode in modes:
    rows = fisher_floor.fisher_rows(classes, 0.0, "drop", 32, cache, eigenvalues=mode)
    print(f"{mode}: against host, {change(rows, host)}")
    for name, table in loaded.items():
      for feature_set in ("union", "fisher"):
        spearman, kendall = fisher_floor.ranking(table, rows, feature_set, layouts)
        print(f"  {name:10s} {feature_set:7s} Spearman {spearman:.3f} (Kendall {kendall:.3f})",
              flush=True)


if __name__ == "__main__":
  main()
