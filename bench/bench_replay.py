"""Replay speed: 20 seeds x 3 strategies on a 3,000-function table, budget 100, UMAP included.

    python -m bench.bench_replay [--seeds 20] [--budget 100] [--functions 3000]

Target (issue: surrogate and strategies, on the 2-core development machine): at most 5 minutes.

The table is synthetic but shaped like Act-Bench: the first 3,000 equivalence classes of
binary(unary(x),unary(x)) over the 31 unary operators, their real output features, a
synthetic Fisher feature (two CDF blocks derived from the outputs, missing where the outputs
are not finite and for 2% of the rest), and a validation accuracy that is a smooth function of
the features plus noise: the closer tanh(f) is to tanh of a swish-like target, the higher.
Non-finite functions fail (NaN), as do 3% of the others at random; near-constant functions
score chance (0.1).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from actbench.expr import features, operators, space
from actbench.search import replay, strategies

BINS = 40


def _cdf(values: np.ndarray, low: float, high: float) -> np.ndarray:
  """Per-row histogram CDF on [low, high], the shape of a Fisher log-eigenvalue CDF."""
  edges = np.linspace(low, high, BINS + 1)
  counts = np.stack([np.histogram(np.clip(row, low, high), edges)[0] for row in values])
  return (np.cumsum(counts, axis=1) / counts.sum(axis=1, keepdims=True)).astype(np.float32)


def synthetic_table(functions: int, seed: int = 0):
  """(Candidates, accuracies) of a synthetic benchmark of `functions` classes."""
  rng = np.random.default_rng(seed)
  names = space.enumerate(space.BENCHMARK_SCHEMA,
                          unary=operators.BENCHMARK_UNARY + operators.EXTRA_UNARY)
  classes = space.equivalence_classes(names)[:functions]
  outputs = features.outputs([members[0] for members in classes])
  finite = np.isfinite(outputs).all(axis=1)
  squashed = np.tanh(np.where(finite[:, None], outputs, 0.0).astype(np.float64))
  x = features.reference_points()
  order = np.argsort(x)
  slopes = np.diff(squashed[:, order], axis=1) / np.maximum(np.diff(x[order]), 1e-6)
  fisher = np.concatenate([_cdf(squashed, -1.0, 1.0),
                           _cdf(np.log10(np.abs(slopes) + 1e-12), -12.0, 6.0)], axis=1)
  missing = ~finite | (rng.random(len(classes)) < 0.02)
  fisher[missing] = np.nan

  target = np.tanh(x * (1.0 / (1.0 + np.exp(-1.7 * x))) + 0.05 * np.sin(2 * x))
  similarity = np.exp(-np.mean((squashed - target) ** 2, axis=1) / 0.05)
  spread = np.abs(fisher[:, BINS // 2] - 0.5)  # a Fisher-side term, smooth in the features
  accuracy = 0.15 + 0.7 * similarity + 0.1 * np.nan_to_num(1.0 - spread, nan=0.5)
  accuracy += rng.normal(scale=0.01, size=len(classes))
  accuracy[squashed.std(axis=1) < 1e-3] = 0.1
  accuracy[~finite | (rng.random(len(classes)) < 0.03)] = np.nan
  candidates = strategies.Candidates(classes, outputs, fisher, schema=space.BENCHMARK_SCHEMA)
  return candidates, accuracy


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, default=20)
  parser.add_argument("--budget", type=int, default=100)
  parser.add_argument("--functions", type=int, default=3000)
  parser.add_argument("--feature-set", default="union")
  parser.add_argument("--progress", action="store_true")
  args = parser.parse_args()

  start = time.perf_counter()
  candidates, accuracy = synthetic_table(args.functions)
  built = time.perf_counter() - start
  start = time.perf_counter()
  result = replay.replay(candidates, accuracy, seeds=range(args.seeds), budget=args.budget,
                         feature_set=args.feature_set, progress=args.progress)
  elapsed = time.perf_counter() - start
  print(f"table: {len(candidates)} classes, {int(np.isnan(accuracy).sum())} failed, "
        f"built in {built:.1f} s; best {result.best_accuracy:.4f}, "
        f"top-1% threshold {result.top1_threshold:.4f}")
  print(f"replay: {args.seeds} seeds x {len(result.runs)} strategies, budget {args.budget}, "
        f"{args.feature_set}: {elapsed:.1f} s (UMAP included)")
  print(json.dumps(result.to_json()["summary"], indent=1))


if __name__ == "__main__":
  main()
