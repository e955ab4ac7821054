"""Speed and memory of actbench.tables on a synthetic table of the published size.

    python -m bench.bench_tables                     # 3,000 entries, Fisher rows of 12,000
    python -m bench.bench_tables --entries 300       # a quick run
    python -m bench.bench_tables --compare-json      # also json.load the whole file

Each step runs in a fresh process, so that its peak memory (VmHWM) is its own: writing the
table with `actbench.tables.write`, the streaming `read`, the first `load` (parse and build the
columnar cache) and a cached `load`. Fisher rows look like the published CDFs: mostly 0.0 and
1.0, with a ramp of float32 values per layer.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The parent stays small: a child's ru_maxrss would start from its parent's size at the fork,
# so each step reads its own high-water mark (VmHWM, reset by exec) instead.
MEASURE = textwrap.dedent("""
    import os, sys, time
    from actbench import tables
    what, path, cache_dir, entries, width = sys.argv[1:6]
    def rss():
      with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    before = rss()
    start = time.perf_counter()
    if what == "write":
      from bench.bench_tables import synthetic_table
      table = synthetic_table(int(entries), int(width))
      before, start = rss(), time.perf_counter()
      tables.write(table, path)
    elif what == "read":
      table = tables.read(path)
    elif what == "json.load":
      import json
      table = json.load(open(path))
    else:
      table = tables.load(path, cache_dir=cache_dir)
    elapsed = time.perf_counter() - start
    print(f"{what:<18s} {elapsed:7.2f} s   peak RSS {rss():6.0f} MB "
          f"({rss() - before:+.0f} MB over the {before:.0f} MB after imports)")
""")


def synthetic_table(entries: int, width: int, layers: int = 10, seed: int = 0):
  """A Table shaped like a published benchmark."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from actbench import tables  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  names = [f"binary{i % 7}(unary{i // 27 % 27}(x),unary{i % 27}(x))#{i}" for i in range(entries)]
  equivalents = [[name] + [f"eq{j}_{name}" for j in range(i % 4)]
                 for i, name in enumerate(names)]
  metrics = {key: rng.uniform(0, 3, entries) for key in tables.METRIC_KEYS}
  metrics["Validation Accuracy"][rng.uniform(size=entries) < 0.05] = np.nan  # failed runs
  fisher = np.zeros((entries, width), np.float32)
  bins = width // layers
  for layer in range(layers):  # each layer's CDF: 0 below a ramp of ~3% of its bins, 1 above
    start = rng.integers(0, bins * 9 // 10, entries)
    ramp = max(2, bins * 3 // 100)
    for i in range(entries):
      row = fisher[i, layer * bins:(layer + 1) * bins]
      row[start[i]:start[i] + ramp] = np.sort(rng.uniform(size=ramp))
      row[start[i] + ramp:] = 1.0
  fisher[rng.uniform(size=entries) < 0.02] = np.nan  # features that failed
  return tables.Table(names, equivalents, metrics, fisher)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--entries", type=int, default=3000)
  parser.add_argument("--width", type=int, default=12000)
  parser.add_argument("--compare-json", action="store_true")
  args = parser.parse_args()
  workdir = tempfile.mkdtemp(prefix="actbench-bench-tables-")
  try:
    path = os.path.join(workdir, "act-bench-synthetic.json")
    cache_dir = os.path.join(workdir, "cache")
    steps = ["write", "read", "load (first)", "load (cached)"]
    for what in steps + ["json.load"] * args.compare_json:
      subprocess.run([sys.executable, "-c", MEASURE, what, path, cache_dir, str(args.entries),
                      str(args.width)], check=True, cwd=_ROOT)
      if what == "write":
        print(f"  {args.entries} entries, Fisher rows of {args.width}: "
              f"{os.path.getsize(path) / 1e6:.0f} MB of JSON, "
              f"{args.entries * args.width * 4 / 1e6:.0f} MB of float32 Fisher features")
    columns = os.path.join(cache_dir, "tables")
    size = sum(os.path.getsize(os.path.join(columns, name)) for name in os.listdir(columns))
    print(f"  cache: {size / 1e6:.0f} MB")
  finally:
    shutil.rmtree(workdir)


if __name__ == "__main__":
  main()
