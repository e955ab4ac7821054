"""Real `python -m actbench.main` processes: two on one workdir share it without a crash and
find what one finds; a search killed with SIGKILL (during features, during the training of a
population) loses nothing, trains nothing twice and resumes the killed population."""

import os
import subprocess
import sys
import time

import pytest

from actbench import modes, search
from actbench.search import journal, store
from bench import kill_trials
from configs import quickstart

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _wait(condition, process, timeout_s=300.0, every_s=0.02):
  """Polls until `condition()` holds; fails if the process ends first."""
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    if condition():
      return
    if process.poll() is not None:
      raise AssertionError(f"the search ended ({process.returncode}) before the moment to kill")
    time.sleep(every_s)
  raise AssertionError("the moment to kill never came")


def _fisher_pending(workdir):
  try:
    with store.Store(search.store_path(workdir)) as db:
      return db.features(search.OUTPUTS)[1].all() and not db.features(search.FISHER)[1].any()
  except (store.StoreError, ValueError):
    return False


# Extended for CI's time: test_postgres_workers.py kills real workers 20 times on every run,
# test_search.py crashes a search mid-way, and test_checkpoint_identity.py and test_train.py
# resume populations from their checkpoints.
@pytest.mark.slow
@pytest.mark.extended
def test_a_killed_search_loses_nothing_and_resumes_its_population(tmp_path):
  workdir = str(tmp_path)
  # 1: killed while computing Fisher features (outputs stored, Fisher rows not yet).
  process = kill_trials.start(workdir, str(tmp_path / "first.log"))
  _wait(lambda: _fisher_pending(workdir), process)
  kill_trials.kill(process)
  assert kill_trials.evaluations(workdir) == {}
  # 2: killed while training the second population, after one of its epochs is saved.
  population = kill_trials.POPULATION
  process = kill_trials.start(workdir, str(tmp_path / "second.log"))
  _wait(lambda: len(kill_trials.evaluations(workdir)) == population
        and any(0 < e < kill_trials.EPOCHS for e in kill_trials.checkpoint_epochs(workdir)),
        process)
  kill_trials.kill(process)
  before = kill_trials.evaluations(workdir)
  saved = max(kill_trials.checkpoint_epochs(workdir))
  assert len(before) == population and 0 < saved < kill_trials.EPOCHS
  # 3: the same command again, to the end.
  log = kill_trials.finish(workdir, str(tmp_path / "third.log"))
  assert kill_trials.check(workdir, before, log) == []
  resumed = kill_trials.resumed_epochs(log)
  assert resumed and resumed[0][0] >= saved  # from the checkpoint (a later one may have landed)
  assert resumed[0][1] == kill_trials.EPOCHS - resumed[0][0]  # only the remaining epochs
  assert len(kill_trials.trained_names(log)) == kill_trials.BUDGET - population


def _benchmark_config():
  config = quickstart.get_config("smoke")
  config.mode = "benchmark"
  config.search.unary = ("zero", "relu", "tanh")  # 7 classes
  config.search.binary = ("add", "max")
  config.search.baselines = ("relu(x)", "tanh(x)")
  config.search.population_size = 2  # rounds enough for two workers to share
  config.train.num_epochs = 1
  config.fisher.batch_size = 64
  config.surrogate.features = "raw"  # no UMAP: a faster start
  return config


# Extended since the PostgreSQL workers' tests (test_postgres_workers.py) run several real
# worker processes on every CI run; the SQLite store's own concurrency is checked process by
# process in test_store.py.
@pytest.mark.slow
@pytest.mark.extended
def test_two_processes_on_one_workdir_equal_one(tmp_path):
  config = _benchmark_config()
  one = tmp_path / "one"
  modes.run(config, str(one))
  shared = tmp_path / "shared"
  args = [sys.executable, "-m", "actbench.main", "--config=configs/quickstart.py:smoke",
          f"--workdir={shared}", "--config.mode=benchmark",
          f"--config.search.unary={config.search.unary!r}",
          f"--config.search.binary={config.search.binary!r}",
          f"--config.search.baselines={config.search.baselines!r}",
          "--config.search.population_size=2", "--config.train.num_epochs=1",
          "--config.fisher.batch_size=64", "--config.surrogate.features=raw"]
  env = dict(os.environ, PYTHONPATH=ROOT)
  processes = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
  outputs = [p.communicate(timeout=600) for p in processes]
  for process, (_, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr[-3000:]
    assert "Directory not empty" not in stderr
  alone, together = kill_trials.evaluations(str(one)), kill_trials.evaluations(str(shared))
  path = search.store_path(str(shared))
  with store.Store(path) as db:
    class_of = {name: i for i, members in enumerate(db.classes()) for name in members}
    assert len(together) == len(db.classes())  # every class evaluated
    assert db.claimed_ids(include_expired=True) == {}  # and every claim released
  # However the scheduler shared the classes: each one trained by one process, once, and
  # recorded under that process's own worker name, and journaled once.
  trained = {process.pid: [class_of[name] for name in kill_trials.trained_names(stderr)]
             for process, (_, stderr) in zip(processes, outputs)}
  assert sorted(i for ids in trained.values() for i in ids) == sorted(together)
  for pid, ids in trained.items():
    assert {i for i, e in together.items() if e[3].endswith(f":pid{pid}")} == set(ids)
  assert sorted(r["class_id"] for r in journal.read(journal.path_of(path))) == sorted(together)
  # The same results, whoever trained them (repr: a failed class's NaN metrics compare equal).
  assert {i: repr(e[:2]) for i, e in together.items()} == {i: repr(e[:2])
                                                           for i, e in alone.items()}
