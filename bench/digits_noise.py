"""How much of an Act-Bench-Digits table's top is noise (issue 15): the standard error of one
function's accuracy, measured where it matters, against the gap between the best function and
the 99th percentile.

    python -m bench.digits_noise --version v2 [--top 20] [--groups 4]
    python -m bench.digits_noise --version v1 [--top 20] [--groups 3]

Retrains the table's `--top` functions with `--groups` independent draws of the table's own
estimator (v2: one seed, the mean over 5 folds, seeds 0, 1, ...; v1: the median of 3 seeds,
seeds 0-2, 3-5, ...), under the table's config. The first draw is the table's own (a check that
the table is reproduced). The standard error is the spread of a function's draws (pooled over
the functions: the root of the mean within-function variance).
"""

import argparse

import numpy as np

from actbench import tables
from actbench.engine import train
from configs import digits_bench, digits_bench_v1

VERSIONS = {"v2": ("digits", digits_bench, 1), "v1": ("digits-v1", digits_bench_v1, 3)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--version", choices=tuple(VERSIONS), default="v2")
  parser.add_argument("--table", default="", help="a table file (default: the shipped one)")
  parser.add_argument("--top", type=int, default=20)
  parser.add_argument("--groups", type=int, default=4)
  args = parser.parse_args()
  name, config_module, seeds_per_draw = VERSIONS[args.version]
  table = tables.load(args.table or name)
  accuracy = table.accuracy("validation")
  finite = accuracy[np.isfinite(accuracy)]
  order = np.argsort(-np.where(np.isfinite(accuracy), accuracy, -np.inf), kind="stable")
  top = [table.names[i] for i in order[:args.top]]
  config = config_module.get_config()
  seeds = list(range(args.groups * seeds_per_draw))
  result = train.train_population(config, top, seeds, progress=True)
  draws = np.zeros((len(top), args.groups))
  for row, function in enumerate(top):
    for group in range(args.groups):
      runs = [i for i, (a, s) in enumerate(zip(result.activations, result.seeds))
              if a == function and s // seeds_per_draw == group]
      summary = result.select(runs).by_activation()[function]
      draws[row, group] = np.nan if summary["diverged"] else summary["validation_accuracy"]
  standard_error = float(np.sqrt(np.nanmean(np.nanvar(draws, axis=1, ddof=1))))
  gap = float(finite.max() - np.percentile(finite, 99))
  print(f"\n{args.version}: the top {args.top} of {len(table)} functions, {args.groups} draws "
        f"of the table's estimator each (the first is the table's own)")
  for row, function in enumerate(top):
    table_value = accuracy[table.index(function)]
    print(f"  {function:34s} table {100 * table_value:6.2f}  draws "
          + " ".join(f"{100 * v:6.2f}" for v in draws[row])
          + f"  mean {100 * np.nanmean(draws[row]):6.2f}")
  reproduced = np.nanmax(np.abs(draws[:, 0] - accuracy[[table.index(f) for f in top]]))
  print(f"  the first draw reproduces the table within {100 * reproduced:.3f} points")
  print(f"  standard error of one function's accuracy: {100 * standard_error:.3f} points")
  print(f"  best - 99th percentile: {100 * gap:.3f} points; ratio {gap / standard_error:.2f}")
  means = np.nanmean(draws, axis=1)
  print(f"  the table's best by the mean of all draws: {top[int(np.nanargmax(means))]} "
        f"({100 * np.nanmax(means):.2f})")


if __name__ == "__main__":
  main()
