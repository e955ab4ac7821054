"""The search store: round trips, resumed spaces, features, claims across processes, SIGKILL
at any moment, and damaged files."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from actbench.search import store as store_lib
from actbench.search.store import Evaluation, Store, StoreError

SCHEMA = "binary(unary(x),unary(x))"

# Worker processes load store.py by path: importing the actbench package would import JAX,
# seconds per process on a 2-core machine, and the store needs only numpy.
_PRELUDE = f"""
import importlib.util, json, os, sys, time
_spec = importlib.util.spec_from_file_location("actbench_store", {store_lib.__file__!r})
store_lib = importlib.util.module_from_spec(_spec)
sys.modules["actbench_store"] = store_lib
_spec.loader.exec_module(store_lib)
Store, Evaluation = store_lib.Store, store_lib.Evaluation
"""


def _classes(n: int) -> list[list[str]]:
  return [[f"rep{i}(x)"] + [f"alias{i}_{j}(x)" for j in range(i % 3)] for i in range(n)]


def _store(tmp_path, n: int = 10, name: str = "store.db") -> Store:
  s = Store(str(tmp_path / name))
  s.init_space(SCHEMA, _classes(n))
  return s


def _evaluation(class_id: int, **overrides) -> Evaluation:
  values = dict(class_id=class_id, status="ok",
                metrics={"validation_accuracy": 0.5 + class_id / 1000, "train_loss": 1.25},
                per_seed=[{"seed": 0, "validation_accuracy": 0.5}], runtime_s=2.5,
                worker="w", finished_at=1000.0 + class_id)
  values.update(overrides)
  return Evaluation(**values)


def _spawn(code: str, *args: str) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-c", _PRELUDE + code, *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 60) -> str:
  out, err = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, err
  return out


# -- round trips ------------------------------------------------------------------------------


def test_round_trip_of_space_meta_features_and_evaluations(tmp_path):
  classes = _classes(6)
  rows = np.arange(18, dtype=np.float32).reshape(6, 3) / 7
  rows[1, 2] = np.inf  # non-finite features are part of the space
  nan_metrics = {"validation_accuracy": math.nan, "test_accuracy": math.inf,
                 "train_loss": -math.inf}
  per_seed = [{"seed": 0, "validation_accuracy": np.float32(0.25), "diverged": False,
               "curve": [1.0, math.nan]}, {"seed": np.int64(1), "note": "nan"}]
  with Store(str(tmp_path / "deep" / "dir" / "store.db")) as s:  # parent dirs are created
    s.init_space(SCHEMA, classes)
    s.set_meta("config_fingerprint", "abc123")
    s.put_features("outputs", range(6), rows)
    assert s.record(_evaluation(3))
    assert s.record(_evaluation(0, status="failed", metrics=nan_metrics, per_seed=per_seed))
    assert s.record(_evaluation(5, finished_at=0.0))
    assert not s.record(_evaluation(3, metrics={"validation_accuracy": 0.99}))  # first stays
    recorded_at = time.time()

  with Store(str(tmp_path / "deep" / "dir" / "store.db")) as s:
    assert s.num_classes == 6 and s.classes() == classes
    assert s.class_of("alias2_1(x)") == 2 and s.class_of("rep4(x)") == 4
    assert s.class_of("relu(x)") is None
    assert s.get_meta("config_fingerprint") == "abc123"
    assert s.get_meta("missing", "default") == "default"
    assert s.get_meta("store.space_schema") == SCHEMA
    values, present = s.features("outputs")
    np.testing.assert_array_equal(values, rows)
    assert values.dtype == np.float32 and present.all()

    evaluations = s.evaluations()
    assert list(evaluations) == [3, 0, 5]  # record order, not class order
    assert evaluations[3] == _evaluation(3)
    assert evaluations[3].metrics["validation_accuracy"] == 0.503
    failed = evaluations[0]
    assert failed.status == "failed"
    assert math.isnan(failed.metrics["validation_accuracy"])
    assert failed.metrics["test_accuracy"] == math.inf
    assert failed.metrics["train_loss"] == -math.inf
    assert failed.per_seed[0]["validation_accuracy"] == 0.25
    assert failed.per_seed[0]["diverged"] is False
    assert failed.per_seed[0]["curve"][0] == 1.0 and math.isnan(failed.per_seed[0]["curve"][1])
    assert failed.per_seed[1] == {"seed": 1, "note": "nan"}  # a string "nan" stays a string
    assert recorded_at - 60 < evaluations[5].finished_at <= recorded_at  # 0 means "now"
    assert s.evaluated_ids() == {0, 3, 5}


def test_meta_rejects_reserved_keys_and_non_text(tmp_path):
  with _store(tmp_path) as s:
    with pytest.raises(ValueError, match="reserved"):
      s.set_meta("store.space_schema", "unary(x)")
    with pytest.raises(TypeError, match="text"):
      s.set_meta("seed", 3)
    s.set_meta("seed", "3")
    s.set_meta("seed", "4")
    assert s.get_meta("seed") == "4"
    assert s.get_meta("store.space_schema") == SCHEMA


def test_record_validates_status_and_class_id(tmp_path):
  with _store(tmp_path, n=4) as s:
    with pytest.raises(ValueError, match="status"):
      s.record(_evaluation(1, status="crashed"))
    with pytest.raises(ValueError, match="out of range"):
      s.record(_evaluation(4))
    assert s.evaluations() == {}


def test_operations_before_init_space_say_so(tmp_path):
  with Store(str(tmp_path / "store.db")) as s:
    assert s.num_classes == 0 and s.classes() == []
    with pytest.raises(StoreError, match="init_space"):
      s.claim([0], 1, "w", 10)


# -- the space --------------------------------------------------------------------------------


def test_init_space_resumes_the_same_space_and_refuses_another(tmp_path):
  path = str(tmp_path / "store.db")
  with Store(path) as s:
    s.init_space(SCHEMA, _classes(5))
    s.record(_evaluation(2))
  with Store(path) as s:
    s.init_space(SCHEMA, _classes(5))  # a resumed search
    assert s.evaluated_ids() == {2}

    moved = _classes(5)
    moved[1].append(moved[2].pop())  # same names, one member in another class
    with pytest.raises(StoreError) as error:
      s.init_space(SCHEMA, moved)
    message = str(error.value)
    assert path in message and "--workdir" in message and "5 classes" in message
    assert "first differing class 1: stored ['rep1(x)', 'alias1_0(x)'], given" in message

    with pytest.raises(StoreError, match=r"space 'unary\(unary\(x\)\)' with 3 classes"):
      s.init_space("unary(unary(x))", _classes(3))
    with pytest.raises(StoreError, match="another --workdir"):
      s.init_space("unary(unary(x))", _classes(5))  # same classes, another schema
    assert s.classes() == _classes(5) and s.num_classes == 5  # untouched


def test_init_space_rejects_malformed_classes_without_writing(tmp_path):
  with Store(str(tmp_path / "store.db")) as s:
    with pytest.raises(ValueError, match="in classes 0 and 1"):
      s.init_space(SCHEMA, [["relu(x)"], ["tanh(x)", "relu(x)"]])
    with pytest.raises(ValueError, match="class 1 is empty"):
      s.init_space(SCHEMA, [["relu(x)"], []])
    assert s.num_classes == 0
    s.init_space(SCHEMA, [["relu(x)"], ["tanh(x)"]])  # the failed calls left nothing behind
    assert s.classes() == [["relu(x)"], ["tanh(x)"]]


# -- features ---------------------------------------------------------------------------------


def test_features_are_put_in_chunks_with_missing_rows_nan(tmp_path):
  with _store(tmp_path, n=5) as s:
    values, present = s.features("fisher")
    assert values.shape == (5, 0) and values.dtype == np.float32
    np.testing.assert_array_equal(present, [False] * 5)

    s.put_features("fisher", [0, 2], np.array([[1.0, 2.0], [3.0, 4.0]]))  # float64 in
    s.put_features("fisher", np.array([4]), np.array([[5.0, 6.0]], np.float32))
    s.put_features("outputs", [1], np.ones((1, 3), np.float32))  # kinds are independent
    values, present = s.features("fisher")
    np.testing.assert_array_equal(present, [True, False, True, False, True])
    np.testing.assert_array_equal(values[present], [[1, 2], [3, 4], [5, 6]])
    assert np.isnan(values[~present]).all() and values.dtype == np.float32

    with pytest.raises(StoreError, match="fisher features are 2 wide; refusing rows 3 wide"):
      s.put_features("fisher", [1, 3], np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"shape \(2, d\)"):
      s.put_features("fisher", [1, 3], np.zeros((3, 2)))
    s.put_features("fisher", [2], np.array([[7.0, 8.0]]))  # a recomputed row replaces
    values, present = s.features("fisher")
    np.testing.assert_array_equal(present, [True, False, True, False, True])  # nothing of
    np.testing.assert_array_equal(values[2], [7, 8])  # the refused chunks was written


def test_a_feature_row_of_the_wrong_length_is_reported(tmp_path):
  path = str(tmp_path / "store.db")
  with _store(tmp_path, n=3) as s:
    s.put_features("outputs", [0, 1], np.ones((2, 4)))
  with sqlite3.connect(path) as db:
    db.execute("UPDATE features SET row = ? WHERE class_id = 1", (b"\0" * 12,))
  db.close()
  with Store(path) as s:
    with pytest.raises(StoreError, match="class 1 has 12 bytes, expected 16"):
      s.features("outputs")


# -- claims in one process --------------------------------------------------------------------


def test_claim_skips_evaluated_and_others_claims_in_candidate_order(tmp_path):
  path = str(tmp_path / "store.db")
  with _store(tmp_path, n=6) as a, Store(path) as b:
    a.record(_evaluation(4))
    assert a.claim([4, 3, 1, 0, 2], 2, "A", ttl_s=60) == [3, 1]
    assert b.claim([4, 3, 1, 0, 2], 2, "B", ttl_s=60) == [0, 2]
    assert b.claimed_ids() == {0: "B", 1: "A", 2: "B", 3: "A"}
    # Own claims first, then the best free candidate; returned in candidate order.
    assert a.claim([5, 0, 1, 3], 3, "A", ttl_s=60) == [5, 1, 3]
    assert a.claim([0, 1, 2, 3, 5], 0, "A", ttl_s=60) == []

    assert a.record(_evaluation(3, worker="A"))
    assert 3 not in a.claimed_ids()  # recording drops the claim
    b.release([0, 1], "B")  # only B's own claim goes
    assert b.claimed_ids() == {1: "A", 2: "B", 5: "A"}
    assert b.claim(range(6), 6, "B", ttl_s=60) == [0, 2]


def test_expired_claims_are_taken_over_and_heartbeats_extend_them(tmp_path):
  with _store(tmp_path, n=4) as s:
    assert s.claim([0, 1], 2, "A", ttl_s=-1.0) == [0, 1]  # expired at once
    assert s.claimed_ids() == {}
    assert s.claimed_ids(include_expired=True) == {0: "A", 1: "A"}
    s.heartbeat("A", ttl_s=60)  # a live worker's heartbeat revives its claims
    assert s.claimed_ids() == {0: "A", 1: "A"}
    assert s.claim([0, 1, 2], 3, "B", ttl_s=60) == [2]
    s.heartbeat("A", ttl_s=-1.0)
    assert s.claim([0, 1, 2, 3], 3, "B", ttl_s=60) == [0, 1, 2]
    assert s.claimed_ids() == {0: "B", 1: "B", 2: "B"}


# -- claims across processes ------------------------------------------------------------------

_CLAIM_WORKER = """
import random
path, name, go, out, n = sys.argv[1:6]
n = int(n)
print("ready", flush=True)
while not os.path.exists(go):
  time.sleep(0.002)
store = Store(path)  # all create the file at once,
store.init_space("s", [[f"f{i}"] for i in range(n)])  # and write (or check) the space
batches, records = [], []
while True:
  ids = store.claim(range(n), 3, name, ttl_s=120)
  if not ids:
    break
  batches.append(ids)
  for i in ids:
    time.sleep(random.uniform(0, 0.01))  # "training": other workers claim meanwhile
    records.append([i, store.record(Evaluation(i, "ok", {"validation_accuracy": i / n}, [],
                                               0.0, worker=name))])
with open(out, "w") as f:
  json.dump({"batches": batches, "records": records}, f)
"""


def test_opening_waits_for_another_connection_writing_the_new_file(tmp_path):
  # Switching to WAL needs the file to itself, and SQLite refuses it at once (no busy wait)
  # while another connection writes: a worker opening the store as another creates it.
  import threading  # pylint: disable=import-outside-toplevel
  path = str(tmp_path / "store.db")
  other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
  other.execute("BEGIN IMMEDIATE")
  other.execute("CREATE TABLE scratch (x)")
  release = threading.Timer(0.5, lambda: other.execute("ROLLBACK"))
  release.start()
  started = time.monotonic()
  with Store(path, timeout_s=20) as db:
    assert db.classes() == []
  assert time.monotonic() - started >= 0.4  # it waited for the other writer
  release.join()
  other.close()


@pytest.mark.slow
def test_concurrent_worker_processes_share_the_classes(tmp_path):
  n, workers = 90, 4
  path = str(tmp_path / "new" / "store.db")
  go = str(tmp_path / "go")
  procs = [_spawn(_CLAIM_WORKER, path, f"w{w}", go, str(tmp_path / f"w{w}.json"), str(n))
           for w in range(workers)]
  for proc in procs:
    assert proc.stdout.readline() == "ready\n"
  open(go, "w").close()  # all start claiming together
  for proc in procs:
    _finish(proc)

  claimed_by = {}
  for w in range(workers):
    with open(tmp_path / f"w{w}.json") as f:
      log = json.load(f)
    for batch in log["batches"]:
      assert 1 <= len(batch) <= 3 and batch == sorted(batch)
      for i in batch:
        assert i not in claimed_by, f"class {i} claimed by {claimed_by[i]} and w{w}"
        claimed_by[i] = f"w{w}"
    assert all(ok for _, ok in log["records"])  # nobody recorded a class twice
  assert sorted(claimed_by) == list(range(n))
  with Store(path) as s:
    assert s.classes() == [[f"f{i}"] for i in range(n)]
    evaluations = s.evaluations()
    assert sorted(evaluations) == list(range(n))
    assert all(e.worker == claimed_by[i] for i, e in evaluations.items())
    assert s.claimed_ids(include_expired=True) == {}


_DYING_WORKER = """
path, ttl = sys.argv[1], float(sys.argv[2])
store = Store(path)
ids = store.claim(range(store.num_classes), 5, "A", ttl_s=ttl)
for i in ids[:2]:
  store.record(Evaluation(i, "ok", {"validation_accuracy": 0.25 * i}, [{"seed": 0}], 1.0,
                          worker="A", finished_at=5.0))
store.heartbeat("A", ttl)
print(json.dumps([ids, time.time() + ttl]), flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_killed_workers_claims_wait_for_expiry_or_its_restart(tmp_path):
  ttl = 2.5
  path = str(tmp_path / "store.db")
  _store(tmp_path, n=8).close()
  started = time.time()
  proc = _spawn(_DYING_WORKER, path, str(ttl))
  ids, expires_at = json.loads(proc.stdout.readline())
  os.kill(proc.pid, signal.SIGKILL)
  assert proc.wait(timeout=30) == -signal.SIGKILL
  proc.stdout.close()
  proc.stderr.close()
  assert ids == [0, 1, 2, 3, 4]
  finished, held = ids[:2], ids[2:]

  with Store(path) as b, Store(path) as restarted:
    assert time.time() < expires_at, "the machine is too slow for this test's ttl"
    evaluations = b.evaluations()
    assert list(evaluations) == finished
    assert evaluations[1] == Evaluation(1, "ok", {"validation_accuracy": 0.25}, [{"seed": 0}],
                                        1.0, worker="A", finished_at=5.0)
    assert b.claimed_ids() == {i: "A" for i in held}
    assert b.claim(range(8), 8, "B", ttl_s=60) == [5, 6, 7]  # not the dead worker's
    b.release([5, 6, 7], "B")
    # The same worker restarted gets its claims back at once, before better free classes.
    assert restarted.claim([7, 6, 5, 3, 2], 2, "A", ttl_s=60) == [3, 2]
    # The last one is granted to another worker only once it expires.
    while not (got := b.claim([4], 1, "B", ttl_s=60)):
      assert time.time() < expires_at + 10
      time.sleep(0.05)
    assert time.time() >= started + ttl
    assert got == [4]
    assert b.claimed_ids() == {2: "A", 3: "A", 4: "B"}


_WRITER = """
import numpy as np
path, start = sys.argv[1], int(sys.argv[2])
store = Store(path)
i = start
while True:
  store.put_features("outputs", [i], np.full((1, 1500), i, np.float32))  # spans pages
  store.record(Evaluation(i, "ok", {"validation_accuracy": i / 7, "bad": float("nan")},
                          [{"seed": s, "curve": [i + s / 10] * 200} for s in range(3)],
                          float(i), worker="writer", finished_at=i + 1.0))
  print(i, flush=True)
  i += 1
"""


@pytest.mark.slow
def test_sigkill_during_a_stream_of_writes_keeps_a_consistent_store(tmp_path):
  path = str(tmp_path / "store.db")
  n = 4000
  _store(tmp_path, n=n).close()
  rng = random.Random(7)
  committed = 0
  for _ in range(3):
    proc = _spawn(_WRITER, path, str(committed))
    wait_for = rng.randrange(3, 25)
    printed = [int(proc.stdout.readline()) for _ in range(wait_for)]
    time.sleep(rng.uniform(0, 0.03))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    printed += [int(line) for line in proc.stdout.read().split()]  # printed before the kill
    proc.stdout.close()
    proc.stderr.close()

    with Store(path) as s:  # opens: the file passes its integrity check
      evaluations = s.evaluations()
      committed = len(evaluations)
      assert list(evaluations) == list(range(committed))  # no gaps, in order
      assert printed[-1] < committed  # everything reported done is there
      for i, e in evaluations.items():
        assert e.metrics["validation_accuracy"] == i / 7 and math.isnan(e.metrics["bad"])
        assert e.per_seed == [{"seed": s, "curve": [i + s / 10] * 200} for s in range(3)]
        assert (e.status, e.runtime_s, e.finished_at) == ("ok", float(i), i + 1.0)
      values, present = s.features("outputs")
      # Features are put before the record: the killed iteration may have put them.
      assert present.sum() in (committed, committed + 1)
      assert present[:committed].all() and not present[committed + 1:].any()
      np.testing.assert_array_equal(values[present],
                                    np.repeat(np.flatnonzero(present), 1500).reshape(-1, 1500))
  assert committed >= 9


# -- damaged and foreign files ----------------------------------------------------------------


def _real_store_bytes(tmp_path) -> bytes:
  path = tmp_path / "real.db"
  with _store(tmp_path, n=50, name="real.db") as s:
    s.put_features("outputs", range(50), np.random.default_rng(0).normal(size=(50, 1000)))
    for i in range(10):
      s.record(_evaluation(i))
  return path.read_bytes()


def _random_bytes(tmp_path) -> bytes:
  return np.random.default_rng(1).integers(0, 256, 20000, dtype=np.uint8).tobytes()


def _truncated(tmp_path) -> bytes:
  data = _real_store_bytes(tmp_path)
  return data[:len(data) // 2]


def _truncated_to_the_last_page(tmp_path) -> bytes:
  return _real_store_bytes(tmp_path)[:-4096]


def _garbled_middle(tmp_path) -> bytes:
  data = bytearray(_real_store_bytes(tmp_path))
  data[8192:16384] = _random_bytes(tmp_path)[:8192]
  return bytes(data)


def _foreign_sqlite(tmp_path) -> bytes:
  db = sqlite3.connect(tmp_path / "foreign.db")
  db.execute("CREATE TABLE results (name TEXT, accuracy REAL)")
  db.execute("INSERT INTO results VALUES ('relu', 0.9)")
  db.commit()
  db.close()
  return (tmp_path / "foreign.db").read_bytes()


def _other_version(tmp_path) -> bytes:
  _real_store_bytes(tmp_path)
  db = sqlite3.connect(tmp_path / "real.db")
  db.execute(f"PRAGMA user_version = {store_lib.FORMAT_VERSION + 1}")
  db.close()
  return (tmp_path / "real.db").read_bytes()


@pytest.mark.parametrize("make, message", [
    (_random_bytes, "not an SQLite database"),
    (_truncated, "malformed"),
    (_truncated_to_the_last_page, "malformed"),
    (_garbled_middle, "damaged|malformed|not a database"),
    (_foreign_sqlite, r"not an actbench store \(application_id 0x0, tables \['results'\]\)"),
    (_other_version, f"format version {store_lib.FORMAT_VERSION + 1}; this actbench reads "
                     f"version {store_lib.FORMAT_VERSION}: upgrade actbench"),
])
def test_damaged_or_foreign_files_raise_store_error_naming_the_path(tmp_path, make, message):
  path = tmp_path / "workdir" / "store.db"
  path.parent.mkdir()
  content = make(tmp_path)
  path.write_bytes(content)
  with pytest.raises(StoreError, match=message) as error:
    Store(str(path))
  assert str(path) in str(error.value)
  assert path.read_bytes() == content  # a refused file is left as it was
  assert sorted(os.listdir(path.parent)) == ["store.db"]


def test_an_empty_file_becomes_a_store(tmp_path):
  path = tmp_path / "store.db"
  path.write_bytes(b"")
  with Store(str(path)) as s:
    s.init_space(SCHEMA, _classes(2))
  with Store(str(path)) as s:
    assert s.num_classes == 2


BUSY_WRITER = """
import sys, threading
from actbench.search.store import Evaluation, Store, StoreError
path, n = sys.argv[1], int(sys.argv[2])
errors, stop = [], threading.Event()
main = Store(path)
def beat():  # the search loop's heartbeat: a connection of its own, opened again and again
  while not stop.is_set():
    try:
      with Store(path) as own:
        own.heartbeat("w", 10)
    except StoreError as e:
      errors.append(str(e))
thread = threading.Thread(target=beat)
thread.start()
for i in range(n):
  main.record(Evaluation(i, "ok", {"a": float(i)}, [], 1.0, "w"))
stop.set()
thread.join()
print(len(errors), errors[:1])
"""


def test_readers_in_other_processes_never_break_a_writer(tmp_path):
  # Regression: opening the database file to check its header, beside a live connection, drops
  # that process's POSIX locks; a reader elsewhere then shrank the write-ahead log under it
  # (SQLITE_IOERR_SHORT_READ, "disk I/O error", a store reported as damaged).
  path = str(tmp_path / "store.db")
  with Store(path) as s:
    s.init_space(SCHEMA, _classes(400))
  writer = subprocess.Popen([sys.executable, "-c", BUSY_WRITER, path, "400"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  reads = 0
  while writer.poll() is None:
    with Store(path) as s:  # what `--config.mode=report` or a test's poll does meanwhile
      s.evaluations()
    reads += 1
  stdout, stderr = writer.communicate()
  assert writer.returncode == 0, stderr[-2000:]
  assert stdout.startswith("0 "), stdout
  assert reads > 10
  with Store(path) as s:
    assert len(s.evaluations()) == 400
