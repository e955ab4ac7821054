"""Replays of aquasurf on the digits v2 table with a Fisher budget: which featured set lets the
surrogate find the best function soonest (README "Large spaces").

    python -m bench.fisher_budget_replay --choice=all        # every function featured
    python -m bench.fisher_budget_replay --choice=outputs    # budget 500, output-guided rounds
    python -m bench.fisher_budget_replay --choice=random     # budget 500, random rounds

Each replays aquasurf for --seeds seeds on the bundled `digits` table (2,791 functions), as
configs/digits_bench.py's replay does (every function affordable, tie 0.0023: one standard
error at the top), and prints the evaluations until a function tied with the best: median and
quartiles over the seeds, and the fraction of seeds that got there. With a budget, the
baselines plus --fisher-budget functions get Fisher features, in rounds of --round every
--every evaluations (featurize.Plan; the replay proposes one function at a time). `--json`
writes the summary there. The three choices are independent: run them side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from actbench import tables
from actbench.search import featurize, replay, strategies
from configs import digits_bench


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--choice", choices=("all",) + featurize.CHOICES, default="outputs")
  parser.add_argument("--seeds", type=int, default=100)
  parser.add_argument("--first-seed", type=int, default=0)
  parser.add_argument("--fisher-budget", type=int, default=500)
  parser.add_argument("--round", type=int, default=50)
  parser.add_argument("--every", type=int, default=8)
  parser.add_argument("--layouts", default=os.path.expanduser("~/.cache/actbench/layouts"),
                      help="where --choice=all keeps each seed's UMAP layout")
  parser.add_argument("--json", default="")
  args = parser.parse_args(argv)
  config = digits_bench.get_config()
  table = tables.load("digits")
  candidates = strategies.Candidates.from_table(table, schema=config.search.space)
  accuracies = table.accuracy("validation")
  plan = None
  if args.choice != "all":
    plan = featurize.Plan(args.fisher_budget, args.round, args.every, args.choice)
  start = time.perf_counter()
  result = replay.replay(candidates, accuracies, strategies=("aquasurf",),
                         seeds=range(args.first_seed, args.first_seed + args.seeds),
                         budget=len(candidates), tie=float(config.replay.tie),
                         layout_cache=args.layouts if plan is None else None,
                         fisher_budget=plan, progress=True)
  run = result["aquasurf"]
  summary = result.summary()["aquasurf"]["evaluations_to_best"]
  featured = "every function" if plan is None else (
      f"budget {plan.budget} ({plan.choice}, rounds of {plan.round_size} every {plan.every})")
  print(f"aquasurf on digits v2, Fisher features for {featured}, {args.seeds} seeds: "
        f"evaluations to a tied-best function median {summary['median']}, quartiles "
        f"{summary['q25']}-{summary['q75']}, reached {summary['reached']:.2f}; "
        f"{time.perf_counter() - start:.0f} s")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({"choice": args.choice, "plan": None if plan is None else plan.__dict__,
                 "seeds": [int(s) for s in result.seeds],
                 "evaluations_to_best": replay.jsonable(run.evaluations_to_best),
                 "summary": summary}, f, indent=1)


if __name__ == "__main__":
  main()
