"""Load on a store: many worker processes claiming and recording classes, training a no-op.

    python -m bench.store_load --store=postgresql://me@localhost/db --processes=16 --classes=5000

Each process opens the store, then repeats: claim `--batch` classes (the search loop's claim,
candidates in a random order of its own), record a made-up evaluation for each (the loop's
record: journaled, then committed), until no class is left. This measures the store, not
training. Prints claims plus records per second (counted from when every process is ready:
JAX's import is not the store's) and checks that no class was recorded twice or lost.
With no --store, a temporary SQLite file is used (one host only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = "load"

_WORKER = r"""
import json, os, random, sys, time
from actbench.search import store as store_lib
location, name, workdir, worker, batch, ready, go = sys.argv[1:8]
batch = int(batch)
db = store_lib.open_store(location, workdir=workdir, name=name)
n = db.num_classes
open(ready, "w").close()
while not os.path.exists(go):
  time.sleep(0.005)
rng = random.Random(worker)
order = list(range(n))
rng.shuffle(order)
claims = records = 0
mine = []
start = time.perf_counter()
while True:
  ids = db.claim(order, batch, worker, 60.0)
  claims += 1
  if not ids:
    break
  evaluations = [store_lib.Evaluation(i, "ok", {"validation_accuracy": i / n}, [], 0.0, worker)
                 for i in ids]
  for evaluation, recorded in zip(evaluations, db.record_many(evaluations)):
    records += 1
    if recorded:
      mine.append(evaluation.class_id)
  done = set(ids)
  order = [i for i in order if i not in done]
print(json.dumps({"worker": worker, "claims": claims, "records": records, "recorded": mine,
                  "seconds": time.perf_counter() - start}))
"""


def run(location: str, name: str, *, processes: int, classes: int, batch: int,
        scratch: str) -> dict:
  """Runs the load and returns its figures: seconds, operations per second, duplicates, lost."""
  from actbench.search import store as store_lib  # pylint: disable=import-outside-toplevel
  setup = store_lib.open_store(location, workdir=os.path.join(scratch, "setup"), name=name)
  with setup:
    setup.init_space(SCHEMA, [[f"f{i}(x)"] for i in range(classes)])
  go = os.path.join(scratch, "go")
  env = dict(os.environ, PYTHONPATH=ROOT)
  workers, ready = [], []
  for p in range(processes):
    ready.append(os.path.join(scratch, f"ready{p}"))
    workers.append(subprocess.Popen(
        [sys.executable, "-c", _WORKER, location, name, os.path.join(scratch, f"w{p}"),
         f"worker{p}", str(batch), ready[-1], go],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  while not all(os.path.exists(path) for path in ready):
    if any(w.poll() not in (None, 0) for w in workers):
      break
    time.sleep(0.05)
  start = time.perf_counter()
  open(go, "w").close()
  reports = []
  for worker in workers:
    out, err = worker.communicate(timeout=1200)
    if worker.returncode != 0:
      raise RuntimeError(f"a load worker failed: {err[-2000:]}")
    reports.append(json.loads(out.strip().splitlines()[-1]))
  seconds = time.perf_counter() - start
  with store_lib.open_store(location, workdir=os.path.join(scratch, "setup"), name=name) as db:
    stored = db.evaluations()
  recorded = [i for report in reports for i in report["recorded"]]
  operations = sum(report["claims"] + report["records"] for report in reports)
  return {"processes": processes, "classes": classes, "batch": batch, "seconds": seconds,
          "operations": operations, "per_second": operations / seconds,
          "recorded_twice": len(recorded) - len(set(recorded)),
          "lost": classes - len(stored),
          "owners_agree": all(stored[i].worker == report["worker"] for report in reports
                              for i in report["recorded"])}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--store", default="", help="postgresql:// URL ('' = a temporary SQLite)")
  parser.add_argument("--name", default=f"load-{os.getpid()}")
  parser.add_argument("--processes", type=int, default=16)
  parser.add_argument("--classes", type=int, default=5000)
  parser.add_argument("--batch", type=int, default=8, help="classes per claim (a population)")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as scratch:
    location = args.store or os.path.join(scratch, "store.sqlite")
    figures = run(location, args.name, processes=args.processes, classes=args.classes,
                  batch=args.batch, scratch=scratch)
  print(json.dumps(figures, indent=1))


if __name__ == "__main__":
  main()
