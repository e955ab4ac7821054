"""Population strategies against each other on one search-space population (issue 16): lax.map,
vmap (every operator of the space at every activation site, for every member) and 'grouped'
(members sorted by their codes, vmap within groups where only the operators some member of
the group selects run, lax.map over the groups), for a few group sizes.

    python -m bench.bench_grouping [--members 32] [--epochs 2] [--group-sizes 4,8,16]
        [--strategies map,vmap,grouped] [--config quickstart]

Encodes the population over the benchmark space (as a search does, so the program's operator
tables are the space's 7 binary and 27 unary operators) and trains it for --epochs with
configs/<config>.py; prints, per strategy, the compile-and-first-epoch time, the steady
model-epochs/s (the later epochs) and the distinct operators a group selects per slot
(what 'grouped' runs). On the CPU, map is the reference ('auto' picks it); on an accelerator,
vmap is, and the question is whether grouping beats it.
"""

import argparse
import importlib
import time

import jax
import numpy as np

from actbench.engine import data, population, trainer as trainer_lib
from actbench.expr import space
from bench.bench_train import candidate_activations


def distinct_per_group(codes: np.ndarray, group_size: int) -> float:
  """Mean over groups and slots of the operators a group selects, as over_members groups."""
  index, groups, size = population.group_order(codes, group_size)
  grouped = codes[np.asarray(index)].reshape(groups, size, -1)
  return float(np.mean([[len(set(group[:, slot])) for slot in range(codes.shape[1])]
                        for group in grouped]))


def run(config, dataset, encoding, codes, epochs: int) -> tuple[float, float]:
  """(compile and first epoch seconds, steady seconds per epoch)."""
  trainer = trainer_lib.PopulationTrainer(config, dataset, encoding)
  seeds = np.zeros(len(codes), np.int32)
  state = trainer.init(list(seeds))
  member_codes, member_seeds = trainer.put_members(codes), trainer.put_members(seeds)
  start = time.perf_counter()
  state, _ = trainer.train_epoch(state, member_codes, member_seeds, 0)
  first = time.perf_counter() - start
  start = time.perf_counter()
  for epoch in range(1, epochs):
    state, _ = trainer.train_epoch(state, member_codes, member_seeds, epoch)
  jax.block_until_ready(state)
  return first, (time.perf_counter() - start) / max(epochs - 1, 1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--members", type=int, default=32)
  parser.add_argument("--epochs", type=int, default=2)
  parser.add_argument("--group-sizes", default="4,8,16")
  parser.add_argument("--strategies", default="map,vmap,grouped")
  parser.add_argument("--config", default="quickstart")
  args = parser.parse_args()
  config = importlib.import_module(f"configs.{args.config}").get_config()
  config.population.schema = space.BENCHMARK_SCHEMA
  dataset = data.load(config.dataset.name)
  names = candidate_activations(args.members)
  encoding = population.Encoding.for_space(space.BENCHMARK_SCHEMA)
  # The baselines are not of the space; their slots in the population go to more candidates.
  names = [n for n in names if population.schema_of(n) == encoding.schema]
  names += [n for n in candidate_activations(4 * args.members)
            if population.schema_of(n) == encoding.schema and n not in names]
  codes = encoding.encode(names[:args.members])
  print(f"backend {jax.default_backend()}, {jax.device_count()} device(s); {len(codes)} members "
        f"of {space.BENCHMARK_SCHEMA} (tables: {len(encoding.binary)} binary, "
        f"{len(encoding.unary)} unary), {args.epochs} epochs of configs/{args.config}.py")
  runs = []
  for strategy in args.strategies.split(","):
    sizes = [int(s) for s in args.group_sizes.split(",")] if strategy == "grouped" else [0]
    for size in sizes:
      runs.append((strategy, size))
  for strategy, size in runs:
    config.population.strategy = strategy
    config.population.group_size = size
    first, per_epoch = run(config, dataset, encoding, codes, args.epochs)
    label = f"grouped/{size}" if strategy == "grouped" else strategy
    distinct = (f"; {distinct_per_group(codes, size):.1f} operators per slot and group"
                if strategy == "grouped" else "")
    print(f"  {label:11s} compile + first epoch {first:7.1f} s; "
          f"{len(codes) / per_epoch:8.1f} model-epochs/s{distinct}", flush=True)


if __name__ == "__main__":
  main()
