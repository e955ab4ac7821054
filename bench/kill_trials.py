"""Kill -9 trials of a real search: no evaluation lost, none repeated, the killed population
resumed from its checkpoint.

    python -m bench.kill_trials --trials=20

Each trial starts `python -m actbench.main` on the quickstart smoke search of a tiny space
(3 populations of 3 functions, 4 epochs each), SIGKILLs it at a random moment of its run,
restarts the same command to completion, and checks the store: every evaluation recorded
before the kill is still there, unchanged; every class of the budget is evaluated exactly
once; and a population killed mid-training resumed from its last checkpoint. Prints one line
per trial and the totals. tests/test_workers.py runs the same helpers at chosen moments.

    python -m bench.kill_trials --trials=20 --store=postgresql://me@host/db

runs the same trials on a PostgreSQL store (each trial a search of its own name in it);
tests/test_postgres_workers.py runs several workers at once on one.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNARY = ("zero", "identity", "relu", "tanh", "sigmoid")
BINARY = ("add", "max")
BUDGET, POPULATION, EPOCHS = 9, 3, 4


def command(workdir: str, *extra: str) -> list[str]:
  """The search every trial runs (and restarts)."""
  return [sys.executable, "-m", "actbench.main", "--config=configs/quickstart.py:smoke",
          f"--workdir={workdir}", f"--config.search.unary={UNARY!r}",
          f"--config.search.binary={BINARY!r}",
          "--config.search.baselines=('relu(x)','tanh(x)','sigmoid(x)')",
          f"--config.search.budget={BUDGET}", f"--config.search.population_size={POPULATION}",
          f"--config.train.num_epochs={EPOCHS}", "--config.train.batch_size=16",
          "--config.fisher.batch_size=64",
          "--config.surrogate.features=raw",  # k-NN on the features: no UMAP, a faster start
          *extra]


def store_flags(url: str, name: str) -> list[str]:
  """The flags of a worker of the search `name` in the database at `url` (its workdir then
  keeps its journal, set-aside results and checkpoints: what stays on its machine)."""
  return [f"--config.search.store={url}", f"--config.search.name={name}"]


# Every trial process compiles the same programs: JAX's persistent compilation cache lets a
# restarted one reuse them (the whole trial search in 13 s instead of 30 s here), as a user's
# restarted worker would with the same setting. A cache the caller set up is kept.
_JAX_CACHE = {"JAX_COMPILATION_CACHE_DIR": os.path.join(tempfile.gettempdir(),
                                                        f"actbench-trials-jax-{os.getuid()}"),
              "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}


def start(workdir: str, log_path: str, *extra: str) -> subprocess.Popen:
  env = {**_JAX_CACHE, **os.environ, "PYTHONPATH": ROOT}
  with open(log_path, "w", encoding="utf-8") as log:
    return subprocess.Popen(command(workdir, *extra), cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def evaluations(workdir: str, url: str = "", name: str = "",
                retry_s: float = 60.0) -> dict[int, tuple]:
  """Class id -> (status, metrics, finished_at, worker) of every evaluation in the store: the
  workdir's file, or the search `name` in the database at `url` (waited for up to retry_s)."""
  from actbench import search  # pylint: disable=import-outside-toplevel
  from actbench.search import store  # pylint: disable=import-outside-toplevel
  if url:
    with store.open_store(url, workdir=workdir, name=name, retry_s=retry_s) as db:
      return summaries(db)
  path = search.store_path(workdir)
  if not os.path.exists(path):
    return {}
  try:
    with store.Store(path) as db:
      return summaries(db)
  except store.StoreError:  # created this instant, or being created
    return {}


def summaries(db) -> dict[int, tuple]:
  """Class id -> (status, metrics, finished_at, worker) of every evaluation in an open store."""
  return {i: (e.status, e.metrics, e.finished_at, e.worker) for i, e in db.evaluations().items()}


def checkpoint_epochs(workdir: str) -> list[int]:
  """The saved epochs of every population checkpoint in the workdir."""
  root = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(root):
    return []
  return [int(step) for population in os.listdir(root)
          for step in os.listdir(os.path.join(root, population)) if step.isdigit()]


def kill(process: subprocess.Popen) -> None:
  process.send_signal(signal.SIGKILL)
  process.wait()


def finish(workdir: str, log_path: str, timeout_s: float = 600, extra: tuple = ()) -> str:
  """Runs the search (with `extra` flags) to completion; its log."""
  process = start(workdir, log_path, *extra)
  process.wait(timeout=timeout_s)
  with open(log_path, encoding="utf-8", errors="replace") as f:
    log = f.read()
  if process.returncode != 0:
    raise RuntimeError(f"the restarted search failed ({process.returncode}):\n{log[-3000:]}")
  return log


def resumed_epochs(log: str) -> list[tuple[int, int]]:
  """(epoch resumed from, epochs trained after it) of every population a run resumed."""
  result = []
  for match in re.finditer(r"Resumed population \S+ from epoch (\d+)", log):
    after = log[match.end():]
    following = re.findall(r"epoch (\d+)/(\d+): median", after)
    start_epoch, trained = int(match.group(1)), 0
    for epoch, total in following:
      if int(epoch) != start_epoch + trained + 1:
        break
      trained += 1
      if int(epoch) == int(total):
        break
    result.append((start_epoch, trained))
  return result


def trained_names(log: str) -> list[str]:
  """Every function a run's log says it trained."""
  return [name for names in re.findall(r"training \d+ functions x \d+ seeds: (.*)", log)
          for name in names.strip().split(", ")]


def class_names(workdir: str, url: str = "", name: str = "") -> list[str]:
  from actbench import search  # pylint: disable=import-outside-toplevel
  from actbench.search import store  # pylint: disable=import-outside-toplevel
  location = url or search.store_path(workdir)
  with store.open_store(location, workdir=workdir, name=name) as db:
    return [members[0] for members in db.classes()]


def journaled(workdir: str) -> list[int]:
  """The class id of every line of the workdir's journal (what its workers recorded, or with a
  database, finished and tried to record), in order."""
  from actbench import search  # pylint: disable=import-outside-toplevel
  from actbench.search import journal  # pylint: disable=import-outside-toplevel
  return [r["class_id"] for r in journal.read(journal.path_of(search.store_path(workdir)))]


def set_aside(workdir: str) -> list[int]:
  """The class ids of the workdir's set-aside results: classes another worker recorded first."""
  from actbench import search  # pylint: disable=import-outside-toplevel
  from actbench.search import journal  # pylint: disable=import-outside-toplevel
  return [r["class_id"] for r in journal.read(os.path.join(workdir, search.SET_ASIDE))]


def check(workdir: str, before: dict, log: str, url: str = "", name: str = "") -> list[str]:
  """What went wrong between the store at the kill and after the restart ([] if nothing):
  an evaluation lost or changed, a class trained again, the budget not met."""
  after, names = evaluations(workdir, url, name), class_names(workdir, url, name)
  problems = []
  lost = [i for i in before if i not in after or repr(after[i]) != repr(before[i])]  # NaN
  if lost:
    problems.append(f"evaluations lost or changed: {lost}")
  again = sorted(set(trained_names(log)) & {names[i] for i in before})
  if again:
    problems.append(f"trained again after the restart: {again}")
  if len(after) != BUDGET:
    problems.append(f"{len(after)} classes evaluated, the budget is {BUDGET}")
  return problems


def trial(seed: int, root: str, run_s: float,
          url: str = "") -> tuple[float, dict, list[str], list]:
  """One kill at a random moment of a run of about `run_s` seconds (a search of its own in the
  database at `url`, when given)."""
  rng = random.Random(seed)
  workdir = tempfile.mkdtemp(prefix=f"trial{seed}-", dir=root)
  name = f"trial{seed}-{os.path.basename(root)}" if url else ""
  extra = tuple(store_flags(url, name)) if url else ()
  process = start(workdir, os.path.join(workdir, "killed.log"), *extra)
  moment = rng.uniform(0.0, run_s)
  time.sleep(moment)
  kill(process)
  before = evaluations(workdir, url, name)
  log = finish(workdir, os.path.join(workdir, "restarted.log"), extra=extra)
  return moment, before, check(workdir, before, log, url, name), resumed_epochs(log)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--trials", type=int, default=20)
  parser.add_argument("--store", default="", help="a postgresql:// database to run the trials "
                      "on (each a search of its own name) instead of the workdir's SQLite file")
  args = parser.parse_args()
  root = tempfile.mkdtemp(prefix="actbench-kill-")
  begin = time.perf_counter()
  reference = store_flags(args.store, f"reference-{os.path.basename(root)}") if args.store else []
  finish(os.path.join(root, "reference"), os.path.join(root, "reference.log"),
         extra=tuple(reference))
  run_s = time.perf_counter() - begin
  print(f"an uninterrupted run takes {run_s:.1f} s; killing at random moments in it")
  failures = 0
  for seed in range(args.trials):
    moment, before, problems, resumed = trial(seed, root, run_s, args.store)
    failures += bool(problems)
    print(f"trial {seed:2d}: killed at {moment:5.1f} s with {len(before)} evaluations recorded; "
          f"resumed populations (from epoch, epochs trained) {resumed}; "
          f"{'; '.join(problems) or 'nothing lost or repeated'}")
  print(f"{args.trials} trials, {failures} with an evaluation lost or repeated")


if __name__ == "__main__":
  main()
