"""Successive halving replayed on a table's learning curves: epochs to the best function for
aquasurf, random search and regularized evolution, each without halving (one function at a
time, and rounds of --batch) and with it (populations of --batch, --rungs, --eta).

    python -m bench.halving_replay                       # the bundled digits table
    python -m bench.halving_replay --table=cnn --seeds=20 --epoch-budget=30000

It needs the table's validation accuracy curves ("Validation Accuracy Curve", one value per
epoch): a table without them is refused in one line (exit status 1). For each variant it
prints the training epochs (a function stopped after 2 of 10 epochs costs 2) until a function
tied with the table's best (within --tie, one standard error at the top of the digits table)
and until a top-1% function was trained fully: median, quartiles over --seeds seeds, and the
fraction of seeds that got there within the epoch budget, which is also the fraction whose
best function at the budget is tied with the table's. Then the Spearman rank correlation
between the accuracy after each epoch and the final one: how well each rung ranks.

The default --epoch-budget is the number of epochs by which random search without halving,
one function at a time, finds a tied-best function in 90% of seeds in expectation
(cost_replay.random_search_budget, exact for uniform sampling without replacement): every
variant gets what lets the weakest baseline mostly succeed. `--json` writes the replay (and
the Spearman per epoch) there; `--plot` draws the search curves by epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from actbench import tables
from actbench.engine import halving
from actbench.expr import space
from actbench.search import cost_replay, replay, strategies

CURVE_KEY = "Validation Accuracy Curve"


def table_choices(names, schema: str) -> list[tuple[str, ...]]:
  """The operators the table's names put at each placeholder of the schema, so that
  evolution's mutations stay inside the table's space."""
  found = None
  for name in names:
    chosen = strategies.schema_operators(name, schema)
    if chosen is None:
      continue
    found = [set() for _ in chosen] if found is None else found
    for position, operator in enumerate(chosen):
      found[position].add(operator)
  if found is None:
    raise ValueError(f"no function of the table is a name of the schema {schema!r}")
  return [tuple(sorted(options)) for options in found]


def _quartiles(values: dict) -> str:
  def show(x):
    return "never" if x == float("inf") else f"{x:.0f}"
  return (f"median {show(values['median'])} ({show(values['q25'])}-{show(values['q75'])}), "
          f"reached {values['reached']:.0%}")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--table", default="digits", help="a table's name or path (tables.load)")
  parser.add_argument("--seeds", type=int, default=100)
  parser.add_argument("--first-seed", type=int, default=0)
  parser.add_argument("--rungs", default="2,5,10", help="epochs, the last the full training")
  parser.add_argument("--eta", type=int, default=3)
  parser.add_argument("--batch", type=int, default=27, help="the population size P")
  parser.add_argument("--tie", type=float, default=0.0023)
  parser.add_argument("--epoch-budget", type=int, default=0,
                      help="0: random search's 90%% budget (see the module's docstring)")
  parser.add_argument("--strategies", default="aquasurf,random,evolution")
  parser.add_argument("--schema", default=space.BENCHMARK_SCHEMA)
  parser.add_argument("--feature-set", default="union")
  parser.add_argument("--layouts", default=os.path.expanduser("~/.cache/actbench/layouts"),
                      help="where aquasurf's UMAP layouts are kept ('' for nowhere)")
  parser.add_argument("--json", default="")
  parser.add_argument("--plot", default="", help="a PNG of the search curves by epochs")
  parser.add_argument("--progress", action="store_true")
  args = parser.parse_args(argv)

  table = tables.load(args.table)
  curves = table.curves.get(CURVE_KEY)
  if curves is None:
    print(f"halving_replay: table {args.table!r} has no {CURVE_KEY!r} (learning curves): "
          f"nothing to replay by epochs", file=sys.stderr)
    raise SystemExit(1)
  fidelity = halving.Fidelity(tuple(int(r) for r in args.rungs.split(",")), args.eta)
  if fidelity.rungs[-1] != curves.shape[1]:
    print(f"halving_replay: the last rung ({fidelity.rungs[-1]}) must be the curves' "
          f"{curves.shape[1]} epochs", file=sys.stderr)
    raise SystemExit(1)
  accuracies = table.accuracy("validation")
  candidates = strategies.Candidates.from_table(table, schema=args.schema)
  choices = table_choices(table.names, args.schema)
  names = [s.strip() for s in args.strategies.split(",") if s.strip()]
  variants = cost_replay.make_variants(names, batches=(1, args.batch), fidelity=fidelity,
                                       population=args.batch)
  budget = args.epoch_budget or cost_replay.random_search_budget(
      accuracies, curves.shape[1], tie=args.tie)
  print(f"{args.table}: {len(candidates)} functions, {curves.shape[1]} epochs each; "
        f"epoch budget {budget} ({budget / curves.shape[1]:.0f} full trainings"
        f"{'' if args.epoch_budget else ': random search finds a tied-best in 90%'}), tie "
        f"{args.tie}, rungs {list(fidelity.rungs)}, eta {fidelity.eta}, P {args.batch}, "
        f"{args.seeds} seeds")
  start = time.perf_counter()
  result = cost_replay.replay_by_cost(
      candidates, accuracies, curves, variants,
      seeds=range(args.first_seed, args.first_seed + args.seeds), epoch_budget=budget,
      tie=args.tie, feature_set=args.feature_set, layout_cache=args.layouts or None,
      strategy_options={"evolution": {"choices": choices}}, progress=args.progress)
  elapsed = time.perf_counter() - start
  for name, summary in result.summary().items():
    variant = result.variants[name]
    print(f"{name:24s} batch {variant.batch:3d}: epochs to a tied-best "
          f"{_quartiles(summary['epochs_to_best'])}; to a top-1% "
          f"{_quartiles(summary['epochs_to_top1'])}; tied with the best at the budget "
          f"{summary['tied_at_budget']:.0%}; median {summary['evaluations']['median']:.0f} "
          f"full trainings, {summary['stopped']['median']:.0f} stopped")
  spearman = cost_replay.curve_rank_correlation(curves, accuracies)
  among_best = cost_replay.curve_rank_correlation(curves, accuracies,
                                                  best=cost_replay.BEST_SHARE)
  for label, values in (("", spearman),
                        (f" among the best {cost_replay.BEST_SHARE:.0%}", among_best)):
    print(f"Spearman between the accuracy after epoch k and the final one{label}: " + ", ".join(
        f"k={k} {rho:.3f}" for k, rho in enumerate(values, 1)))
  print(f"{elapsed:.0f} s")
  if args.json:
    document = result.to_json()
    document["spearman_per_epoch"] = replay.jsonable(spearman)
    document["spearman_per_epoch_best"] = replay.jsonable(among_best)
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(document, f, indent=1, allow_nan=False)
  if args.plot:
    from actbench.report import plots  # pylint: disable=import-outside-toplevel
    plots.cost_curves({name: run.best_so_far for name, run in result.runs.items()},
                      result.grid, args.plot, reference=result.best_accuracy,
                      title=f"{args.table}: best validation accuracy so far by epochs")


if __name__ == "__main__":
  main()
