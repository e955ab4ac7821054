"""A search over a large space with a Fisher budget: how soon the first population trains,
peak memory and the store's size (README "Large spaces").

    python -m bench.large_space                                   # 1,203,344 classes
    python -m bench.large_space --space='binary(unary(x),unary(unary(x)))'   # 79,944

Runs the launcher on the quickstart config (digits, the small CNN) in a fresh workdir with
`--config.search.fisher_budget` and a search budget of one population, as a child process,
and prints: seconds from the start until the first population begins training (the log line
"training N functions"), the stages before it (from the log's own lines), the child's peak
resident memory (getrusage) and the store's size on disk. `--keep` keeps the workdir.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--space", default="binary(unary(unary(x)),unary(unary(x)))")
  parser.add_argument("--fisher-budget", type=int, default=5000)
  parser.add_argument("--population", type=int, default=8)
  parser.add_argument("--workdir", default="")
  parser.add_argument("--keep", action="store_true")
  args = parser.parse_args(argv)
  workdir = args.workdir or tempfile.mkdtemp(prefix="actbench-large-")
  command = [sys.executable, "-m", "actbench.main", "--config=configs/quickstart.py",
             f"--workdir={workdir}", f"--config.search.space={args.space}",
             f"--config.search.fisher_budget={args.fisher_budget}",
             f"--config.search.budget={args.population}",
             f"--config.search.population_size={args.population}"]
  print(" ".join(command), flush=True)
  start = time.perf_counter()
  seen: dict[str, float] = {}
  with subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                        text=True, bufsize=1) as child:
    for line in child.stderr:
      now = time.perf_counter() - start
      for marker in ("classes of the space", "output sketches of", "Fisher budget: round 0",
                     "embedding", "training "):
        if marker in line and marker not in seen:
          seen[marker] = now
          print(f"  {now:7.1f} s  {line.strip()[:150]}", flush=True)
      if "Traceback" in line or "Error" in line:
        print(line.rstrip(), flush=True)
  total = time.perf_counter() - start
  peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
  size = sum(os.path.getsize(os.path.join(workdir, name)) for name in os.listdir(workdir)
             if name.startswith("search.sqlite"))
  print(f"space {args.space}, fisher_budget {args.fisher_budget}, exit status "
        f"{child.returncode}")
  if "training " in seen:
    print(f"first population training after {seen['training ']:.0f} s "
          f"({seen['training '] / 60:.1f} min)")
  print(f"whole run (one population) {total:.0f} s; peak memory {peak_gb:.2f} GB; "
        f"store {size / 2**30:.2f} GB")
  if not args.keep and not args.workdir:
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
  main()
