"""Real `python -m actbench.main` workers sharing one PostgreSQL store, each with a workdir of
its own, as on separate machines: killed with SIGKILL at random and restarted; through a crash
of the server; one cut off past its claims' time-to-live while another takes its classes
over; two computing the Fisher features together. Each time the store holds what one worker
alone finds (a reference run on SQLite): every class of the budget once, the same results.

The searches use the random strategy: its proposals are a fixed order walked past what is
evaluated or claimed, so several workers evaluate the same classes as one, whatever the timing.
AquaSurf's proposals depend on the evaluations recorded at the moment of asking, which differ
with concurrent workers, and so would the set of classes evaluated.
"""

from __future__ import annotations

import collections
import os
import random
import re
import time

import numpy as np
import pytest

from actbench import search
from actbench.report import live as live_report
from actbench.report.leaderboard import store_leaderboard
from actbench.search import journal, store
from bench import kill_trials
from tests.tcp_proxy import TcpProxy
from tests.test_live_report import page_rows

# Fisher features in chunks of 2: the workers share them (and the reference's chunks are theirs).
SEARCH = ("--config.search.strategy=random", "--config.search.features_chunk=2")
# Test 1 searches 5 rounds of 3 workers, so that kills land in every phase of the search.
LONG_BUDGET = 15
LONG = f"--config.search.budget={LONG_BUDGET}"
PACE, HURRIED = (1.0, 4.0), (0.2, 1.0)  # seconds between kills
UNREACHABLE = "the database is unreachable"
BACK = "the database is back"


class Worker:
  """One worker's workdir and its runs (a killed run is restarted with the same command)."""

  def __init__(self, root, label: str, url: str, name: str, *extra: str):
    self.label = label
    self.workdir = str(root / label)
    self.logs: list[str] = []
    self.args = (*kill_trials.store_flags(url, name), *SEARCH, *extra)
    self.process = None
    self.pids: list[int] = []  # of every run: the store names a worker by its process

  def start(self) -> None:
    os.makedirs(self.workdir, exist_ok=True)
    self.logs.append(os.path.join(os.path.dirname(self.workdir),
                                  f"{self.label}.{len(self.logs)}.log"))
    self.process = kill_trials.start(self.workdir, self.logs[-1], *self.args)
    self.pids.append(self.process.pid)

  @property
  def running(self) -> bool:
    return self.process is not None and self.process.poll() is None

  @property
  def pid(self) -> int:
    return self.process.pid

  def log(self, run: int = -1) -> str:
    with open(self.logs[run], encoding="utf-8", errors="replace") as f:
      return f.read()

  def wait(self, timeout_s: float = 300.0) -> None:
    """Waits for the run to end; fails unless it ended well."""
    self.process.wait(timeout=timeout_s)
    assert self.process.returncode == 0, (
        f"worker {self.label} failed ({self.process.returncode}):\n{self.log()[-4000:]}")

  def stop(self) -> None:
    if self.running:
      kill_trials.kill(self.process)


def _leaderboard(evaluations: dict[int, tuple]) -> dict[int, str]:
  """class id -> (status, metrics): repr, so that a failed class's NaN metrics compare equal."""
  return {i: repr(e[:2]) for i, e in evaluations.items()}


def _store_lines(log: str) -> str:
  """The log lines of the store's connection (outages)."""
  return "\n".join(line for line in log.replace("\r", "\n").splitlines()
                   if "postgres_store.py" in line)


def _fisher_counts(log: str) -> list[int]:
  return [int(n) for n in re.findall(r"computed (\d+) Fisher features in this worker", log)]


@pytest.fixture(scope="module")
def reference(postgres_server, tmp_path_factory):
  """One worker alone on SQLite, the same search: its evaluations, Fisher rows and classes.
  (postgres_server first: without a server the tests skip before this minute of training.)"""
  del postgres_server
  workdir = str(tmp_path_factory.mktemp("reference"))
  kill_trials.finish(workdir, os.path.join(workdir, "run.log"), extra=(*SEARCH, LONG))
  with store.Store(search.store_path(workdir)) as db:
    fisher, present = db.features(search.FISHER)
    classes = db.classes()
  assert present.all()
  evaluations = kill_trials.evaluations(workdir)
  assert len(evaluations) == LONG_BUDGET
  return {"evaluations": evaluations, "fisher": fisher, "classes": classes}


def _first(evaluations: dict, n: int = kill_trials.BUDGET) -> dict:
  """The first n evaluations recorded: what a search of budget n records (the random order)."""
  return dict(list(evaluations.items())[:n])


def _workers(tmp_path, url: str, name: str, count: int, *args: str) -> list[Worker]:
  """`count` workers of the search `name`, each with a workdir of its own (separate machines)."""
  return [Worker(tmp_path, f"w{i}", url, name, *args) for i in range(count)]


def _start_all(workers) -> None:
  for worker in workers:
    worker.start()


def _stop_all(workers) -> None:
  for worker in workers:
    worker.stop()


def _wait_for(condition, workers, timeout_s: float = 120.0, every_s: float = 0.05):
  """Polls until `condition()` holds; fails when a worker ends first, or on timeout."""
  deadline = time.monotonic() + timeout_s
  while not condition():
    for worker in workers:
      if not worker.running:
        raise AssertionError(f"worker {worker.label} ended ({worker.process.returncode}) "
                             f"before the moment came:\n{worker.log()[-3000:]}")
    if time.monotonic() > deadline:
      raise AssertionError("the moment never came")
    time.sleep(every_s)


def _claims(url: str, name: str, workdir: str) -> dict[int, str]:
  """The search's training claims: class id -> worker."""
  with store.open_store(url, workdir=workdir, name=name, retry_s=30.0) as db:
    return db.claimed_ids()


def _class_of(classes) -> dict[str, int]:
  return {name: i for i, members in enumerate(classes) for name in members}


def _check_journals(workers, final: dict[int, tuple]) -> None:
  """Every evaluation in the store is in the journal of the workdir whose process recorded it
  (on its machine before the database had it); a class journaled in several workdirs is set
  aside in one of them (a result another worker recorded first), never recorded twice."""
  lines = {}  # (class id, worker, finished_at) -> the workdir that journaled it
  for worker in workers:
    for record in journal.read(journal.path_of(search.store_path(worker.workdir))):
      lines[record["class_id"], record["worker"], record["finished_at"]] = worker.label
  owner = {f":pid{pid}": worker.label for worker in workers for pid in worker.pids}
  for i, (_, _, finished_at, name) in final.items():
    assert lines.get((i, name, finished_at)) == owner[name[name.rindex(":"):]], (i, name)
  journaled = collections.Counter(i for worker in workers
                                  for i in set(kill_trials.journaled(worker.workdir)))
  set_aside = {i for worker in workers for i in kill_trials.set_aside(worker.workdir)}
  assert {i for i, n in journaled.items() if n > 1} <= set_aside
  assert set(journaled) == set(final)


@pytest.mark.slow
def test_three_workers_killed_at_random_lose_nothing_and_find_what_one_finds(
    tmp_path, postgres_url, reference):
  rng = random.Random(23)
  name, kills = "kills", 20
  workers = _workers(tmp_path, postgres_url, name, 3, LONG)
  monitor = str(tmp_path / "monitor")
  seen: dict[int, str] = {}  # class id -> its evaluation, as first seen in the store
  changed = []
  killed = []  # (seconds into the run, worker, evaluations in the store then)
  hurried = False
  with store.open_store(postgres_url, workdir=monitor, name=name) as db:
    begin = time.monotonic()
    try:
      for worker in workers:
        worker.start()
      next_kill = begin + rng.uniform(*PACE)
      while len(killed) < kills:
        for i, evaluation in kill_trials.summaries(db).items():
          if seen.setdefault(i, repr(evaluation)) != repr(evaluation):
            changed.append(i)
        for worker in workers:
          if not worker.running and worker.process.returncode != 0:
            worker.wait()  # fails, with its log
        now = time.monotonic()
        running = [worker for worker in workers if worker.running]
        # Once every remaining class is being trained, kill faster than a worker can train
        # (a search that ended could not be killed any more): from then on a restarted
        # victim, importing JAX, keeps one worker running until the next kill.
        live = {f":pid{worker.pid}" for worker in running}
        training = [i for i, owner in db.claimed_ids().items() if owner[owner.rindex(":"):] in live]
        if not hurried and len(seen) + len(training) >= LONG_BUDGET:
          hurried = True
          next_kill = min(next_kill, now + rng.uniform(*HURRIED))
        assert running, f"the search ended after {len(killed)} kills: {killed}"
        if now >= next_kill:
          victim = rng.choice(running)
          victim.stop()
          killed.append((round(now - begin, 1), victim.label, len(seen)))
          victim.start()
          next_kill = time.monotonic() + rng.uniform(*(HURRIED if hurried else PACE))
        time.sleep(0.1)
      for worker in workers:
        worker.wait()
    finally:
      _stop_all(workers)
    final = kill_trials.summaries(db)
    assert db.claimed_ids(include_expired=True) == {}
    assert db.claimed_ids(include_expired=True, task=search.FISHER) == {}
    assert db.features(search.FISHER)[1].all()

  assert changed == [], killed
  assert {i: repr(final.get(i)) for i in seen} == seen, killed  # nothing lost or changed
  assert len(final) == LONG_BUDGET
  _check_journals(workers, final)
  assert _leaderboard(final) == _leaderboard(reference["evaluations"]), killed

  # A laptop follows the search through the shared store: mode report writes its page (and,
  # the search having ended, its watch ends at once).
  laptop = str(tmp_path / "laptop")
  kill_trials.finish(laptop, str(tmp_path / "laptop.log"), extra=(
      *kill_trials.store_flags(postgres_url, name), *SEARCH, LONG, "--config.mode=report",
      "--config.report.watch_s=3600"))
  with store.open_store(postgres_url, workdir=monitor, name=name) as db:
    rows = store_leaderboard(db.classes(), db.evaluations())
  shown = page_rows(os.path.join(laptop, live_report.PAGE))
  assert [row[1] for row in shown] == [row["activation"] for row in rows]
  assert [row[2] for row in shown] == [
      row["validation_accuracy"] if np.isfinite(row["validation_accuracy"]) else None
      for row in rows]


@pytest.mark.slow
def test_workers_wait_out_a_server_crash_and_lose_nothing(tmp_path, postgres_server,
                                                          postgres_url, reference):
  name = "crash"
  workers = _workers(tmp_path, postgres_url, name, 2)
  monitor = str(tmp_path / "monitor")
  try:
    _start_all(workers)
    # Both workers training: each holds claims.
    _wait_for(lambda: len(set(_claims(postgres_url, name, monitor).values())) == 2, workers,
              every_s=0.2)
    before = kill_trials.evaluations(monitor, postgres_url, name)
    down = time.monotonic()
    postgres_server.stop(mode="immediate")
    try:
      while time.monotonic() - down < 20.0:
        for worker in workers:  # waiting, not failing
          assert worker.running, f"worker {worker.label} ended:\n{worker.log()[-3000:]}"
        time.sleep(0.5)
    finally:
      postgres_server.start()
    for worker in workers:
      worker.wait()
  finally:
    _stop_all(workers)

  after = kill_trials.evaluations(monitor, postgres_url, name)
  assert {i: repr(after.get(i)) for i in before} == {i: repr(e) for i, e in before.items()}
  assert len(after) == kill_trials.BUDGET
  assert _leaderboard(after) == _leaderboard(_first(reference["evaluations"]))
  # Each class trained by one worker, once (no claim expired, nobody died).
  class_of = _class_of(reference["classes"])
  trained = [class_of[n] for worker in workers for n in kill_trials.trained_names(worker.log())]
  assert sorted(trained) == sorted(after)
  _check_journals(workers, after)
  for worker in workers:
    assert kill_trials.set_aside(worker.workdir) == []
    # One outage: said once when it begins and once when it ends.
    log = worker.log()
    assert (log.count(UNREACHABLE), log.count(BACK)) == (1, 1), _store_lines(log)


@pytest.mark.slow
def test_a_worker_cut_off_past_its_claims_ttl_has_its_classes_taken_over(
    tmp_path, postgres_server, postgres_url, reference):
  # A heartbeat a second (ttl / 3), within A's two seconds of training: the cut reaches A's
  # heartbeat connection while it lasts, and its main connection after.
  name, ttl = "cutoff", 3.0
  monitor = str(tmp_path / "monitor")
  with TcpProxy("127.0.0.1", postgres_server.port) as proxy:
    a = Worker(tmp_path, "a", proxy.url_for(postgres_url), name,
               f"--config.search.claim_ttl_s={ttl}")
    b = Worker(tmp_path, "b", postgres_url, name, f"--config.search.claim_ttl_s={ttl}")
    try:
      a.start()
      _wait_for(lambda: bool(_claims(postgres_url, name, monitor)), [a], every_s=0.1)
      proxy.cut()
      held = set(_claims(postgres_url, name, monitor))
      b.start()
      # B waits out the claims' TTL, then trains A's classes and records them.
      _wait_for(lambda: held <= set(kill_trials.evaluations(monitor, postgres_url, name)),
                [a, b], timeout_s=180.0, every_s=0.5)
      proxy.restore()
      a.wait()
      b.wait()
    finally:
      _stop_all([a, b])

  final = kill_trials.evaluations(monitor, postgres_url, name)
  assert len(final) == kill_trials.BUDGET
  assert _leaderboard(final) == _leaderboard(_first(reference["evaluations"]))
  assert held and all(final[i][3].endswith(f":pid{b.pid}") for i in held)
  # A's late results: set aside in its workdir, not recorded.
  assert sorted(kill_trials.set_aside(a.workdir)) == sorted(held)
  # Back in time, A may still claim classes nobody has yet: those it records, and journals.
  by_a = {i for i, e in final.items() if e[3].endswith(f":pid{a.pid}")}
  assert not by_a & held
  assert sorted(kill_trials.journaled(a.workdir)) == sorted(held | by_a)  # kept locally
  _check_journals([a, b], final)
  log = a.log()
  assert log.count("was recorded by another worker first") == len(held)
  # One cut, one outage: said once when it begins and once when it ends.
  assert (log.count(UNREACHABLE), log.count(BACK)) == (1, 1), _store_lines(log)


@pytest.mark.slow
def test_two_workers_compute_each_fisher_feature_once(tmp_path, postgres_url, reference):
  name = "fisher"
  workers = _workers(tmp_path, postgres_url, name, 2)
  monitor = str(tmp_path / "monitor")
  try:
    _start_all(workers)
    # The features are the test; their training would add nothing.
    _wait_for(lambda: all(_fisher_counts(worker.log()) for worker in workers), workers,
              every_s=0.2)
  finally:
    _stop_all(workers)
  counts = [_fisher_counts(worker.log()) for worker in workers]
  classes = len(reference["classes"])
  assert sum(n for (n,) in counts) == classes and all(n > 0 for (n,) in counts), counts
  with store.open_store(postgres_url, workdir=monitor, name=name) as db:
    fisher, present = db.features(search.FISHER)
    assert db.claimed_ids(task=search.FISHER, include_expired=True) == {}
  assert present.all()
  np.testing.assert_array_equal(fisher, reference["fisher"])
