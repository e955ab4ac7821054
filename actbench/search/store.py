"""The persistent record of a search: its space, features, evaluations and claims, in SQLite.

One file in the workdir holds everything the search loop must not lose: the equivalence classes
of the space (class ids are positions in the list given to `init_space`), feature rows per
kind, the evaluation of each class, and which worker is evaluating which class. Several worker
processes share the file; SQLite's locking makes each write one atomic transaction, and
`claim` hands out classes so that no class is trained twice (METHOD.md section 4).

The file is opened in WAL mode with synchronous=FULL: each commit is fsynced to the log before
`record` returns. NORMAL would already survive a process killed with SIGKILL (a committed
transaction sits in the OS page cache, which the kill does not discard), but not a power loss
or kernel crash; commits here are rare (one per trained function, or per chunk of features),
so the fsync costs nothing next to the hours of training a lost result would cost.

Feature rows are little-endian float32 BLOBs, their length checked on read; metrics are JSON
with non-finite floats tagged, so that NaN and inf survive. Nothing read back is evaluated.

Every evaluation is also appended to a journal beside the file (journal.py) before it is
committed: a damaged file is rebuilt from it with `--config.mode=recover` (recovery.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import operator
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from actbench import errors
from actbench.search import journal

APPLICATION_ID = 0x41435442  # b'ACTB': SQLite's header field for "which program's file is this"
FORMAT_VERSION = 1  # kept in PRAGMA user_version; bump on any change of the tables below
STATUSES = ("ok", "failed")

_SQLITE_HEADER = b"SQLite format 3\x00"
_FLOAT_TAG = "$float"  # {"$float": "nan"} stands for a non-finite float in stored JSON

_TABLES = {
    "meta": "key TEXT PRIMARY KEY, value TEXT NOT NULL",
    "classes": "class_id INTEGER PRIMARY KEY, name TEXT NOT NULL",
    "functions": "name TEXT PRIMARY KEY, class_id INTEGER NOT NULL, position INTEGER NOT NULL",
    "feature_kinds": "kind TEXT PRIMARY KEY, width INTEGER NOT NULL",
    "features": "kind TEXT NOT NULL, class_id INTEGER NOT NULL, row BLOB NOT NULL, "
                "PRIMARY KEY (kind, class_id)",
    # seq orders evaluations as recorded; AUTOINCREMENT never reuses a number.
    "evaluations": "seq INTEGER PRIMARY KEY AUTOINCREMENT, class_id INTEGER NOT NULL UNIQUE, "
                   "status TEXT NOT NULL, metrics TEXT NOT NULL, per_seed TEXT NOT NULL, "
                   "runtime_s REAL NOT NULL, worker TEXT NOT NULL, finished_at REAL NOT NULL",
    "claims": "class_id INTEGER PRIMARY KEY, worker TEXT NOT NULL, expires_at REAL NOT NULL",
}


class StoreError(errors.InputError, RuntimeError):
  """The store file is corrupted, foreign, of another version, or holds another search."""


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """The result of training one equivalence class (all seeds)."""
  class_id: int
  status: str  # 'ok' | 'failed'
  metrics: dict[str, float]  # medians over seeds, e.g. validation_accuracy; NaN allowed
  per_seed: list[dict]
  runtime_s: float
  worker: str = ""
  finished_at: float = 0.0  # seconds since the epoch; 0 means "when recorded"


def _encode(value: Any) -> Any:
  """`value` with numpy scalars made Python and non-finite floats tagged, for strict JSON."""
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return {_FLOAT_TAG: repr(value)}  # 'nan', 'inf', '-inf'
  if isinstance(value, dict):
    return {str(key): _encode(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [_encode(item) for item in value]
  return value


def _to_json(value: Any) -> str:
  return json.dumps(_encode(value), allow_nan=False)


def _from_json(text: str) -> Any:
  def untag(obj: dict) -> Any:
    return float(obj[_FLOAT_TAG]) if obj.keys() == {_FLOAT_TAG} else obj
  return json.loads(text, object_hook=untag)


def space_digest(schema: str, classes: list[list[str]]) -> str:
  """A fingerprint of a space: its schema and its classes, members and order included."""
  payload = json.dumps([schema, classes], separators=(",", ":"))
  return hashlib.sha256(payload.encode()).hexdigest()


def _foreign_header(path: str) -> str | None:
  """What the file starts with, when that is not SQLite's header (None otherwise).

  Read only after SQLite has refused the file: opening and closing a database file beside a
  live SQLite connection of this process would drop that connection's POSIX locks (a close
  releases all of a process's locks on the file), so that other processes could checkpoint
  and shrink the write-ahead log under it."""
  try:
    with open(path, "rb") as f:
      head = f.read(len(_SQLITE_HEADER))
  except OSError:
    return None
  return None if head == _SQLITE_HEADER else repr(head[:8])


class Store:
  """A search's store file, shared by worker processes. See the module docstring."""

  def __init__(self, path: str | os.PathLike, *, timeout_s: float = 60.0):
    """Opens the store at `path`, creating it (and its directory) if missing.

    Args:
      path: the SQLite file.
      timeout_s: how long a write waits for another process's transaction before failing.

    Raises:
      StoreError: the file is not an actbench store, is damaged or of another format version.
    """
    self.path = os.fspath(path)
    self.journal_path = journal.path_of(self.path)
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    self._timeout_s = timeout_s
    self._num_classes: int | None = None
    self._db = None
    with self._errors("cannot open"):
      # isolation_level=None: no implicit transactions; every write below says BEGIN itself.
      self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
    try:
      with self._errors("cannot open"):
        self._create_or_validate()  # first: a refused file is left as it was
        mode = self._journal_mode_wal()
        if mode != "wal":
          raise StoreError(f"{self.path}: cannot switch to WAL mode (got {mode!r})")
        self._db.execute("PRAGMA synchronous=FULL")  # why FULL: see the module docstring
    except BaseException:
      self.close()
      raise

  def close(self) -> None:
    if self._db is not None:
      self._db.close()
      self._db = None

  def __enter__(self) -> Store:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  # -- plumbing ---------------------------------------------------------------------------

  @contextlib.contextmanager
  def _errors(self, doing: str) -> Iterator[None]:
    """Turns sqlite3's errors into StoreError naming the file."""
    try:
      yield
    except sqlite3.Error as e:
      head = _foreign_header(self.path) if "not a database" in str(e) else None
      if head is not None:
        raise StoreError(f"{self.path} is not an actbench store: not an SQLite database (it "
                         f"starts with {head}); use another --workdir or remove it") from e
      if "locked" in str(e) or "busy" in str(e):
        hint = f"another process held it for over {self._timeout_s:g} s"
      else:
        hint = ("a damaged or foreign file: run the same command with --config.mode=recover "
                "to rebuild it from its journal, or use another --workdir")
      raise StoreError(f"{self.path}: {doing}: {type(e).__name__}: {e} ({hint})") from e

  @contextlib.contextmanager
  def _transaction(self, doing: str, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
    """One transaction; IMMEDIATE takes the write lock up front, so that a read-then-write
    (claim, record) sees no other writer in between and waits (busy timeout) rather than
    failing on a lock upgrade."""
    if self._db is None:
      raise StoreError(f"{self.path}: the store is closed")
    with self._errors(doing):
      self._db.execute(f"BEGIN {mode}")
      try:
        yield self._db
      except BaseException:
        if self._db.in_transaction:
          self._db.execute("ROLLBACK")
        raise
      self._db.execute("COMMIT")

  def _create_or_validate(self) -> None:
    if self._tables() == set() and self._pragma("application_id") == 0:
      self._journal_mode_wal()  # persistent; not inside a transaction
      with self._transaction("cannot create the store"):
        if not self._tables():  # another process may have created it while we waited
          for name, columns in _TABLES.items():
            self._db.execute(f"CREATE TABLE {name} ({columns})")
          self._db.execute(f"PRAGMA application_id={APPLICATION_ID}")
          self._db.execute(f"PRAGMA user_version={FORMAT_VERSION}")
          self._db.executemany("INSERT INTO meta VALUES (?, ?)", [
              ("store.format", "actbench search store"),
              ("store.version", str(FORMAT_VERSION))])
    application_id, tables = self._pragma("application_id"), self._tables()
    if application_id != APPLICATION_ID:
      raise StoreError(f"{self.path} is an SQLite database but not an actbench store "
                       f"(application_id {application_id:#x}, tables {sorted(tables)}); "
                       "use another --workdir")
    version = self._pragma("user_version")
    if version != FORMAT_VERSION:
      raise StoreError(f"{self.path} is an actbench store of format version {version}; this "
                       f"actbench reads version {FORMAT_VERSION}")
    if not set(_TABLES) <= tables:
      raise StoreError(f"{self.path}: actbench store without tables "
                       f"{sorted(set(_TABLES) - tables)}")
    # Reads every page: a truncated or overwritten file fails here, not mid-search.
    problems = [row[0] for row in self._db.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
      raise StoreError(f"{self.path}: the store is damaged: {'; '.join(problems)}. Run the same "
                       "command with --config.mode=recover to rebuild it: every evaluation is "
                       f"kept in {journal.path_of(self.path)}")

  def _journal_mode_wal(self) -> str:
    """Switches the file to WAL and returns the journal mode. The switch needs the file to
    itself, and SQLite answers "locked" at once, without waiting out the busy timeout, while
    another process is opening or creating the same store: retried until the timeout."""
    deadline = time.monotonic() + self._timeout_s
    while True:
      try:
        return self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
      except sqlite3.OperationalError as e:
        if not ("locked" in str(e) or "busy" in str(e)) or time.monotonic() > deadline:
          raise
        time.sleep(0.01)

  def _pragma(self, name: str) -> int:
    return self._db.execute(f"PRAGMA {name}").fetchone()[0]

  def _tables(self) -> set[str]:
    return {row[0] for row in self._db.execute("SELECT name FROM sqlite_master "
                                               "WHERE type = 'table'")} - {"sqlite_sequence"}

  def _select(self, sql: str, args: tuple = ()) -> list[tuple]:
    if self._db is None:
      raise StoreError(f"{self.path}: the store is closed")
    with self._errors("cannot read"):
      return self._db.execute(sql, args).fetchall()

  def _ids(self, class_ids: Iterable[int]) -> list[int]:
    """Class ids as ints, each checked against the space."""
    n = self.num_classes
    if n == 0:
      raise StoreError(f"{self.path} holds no search space yet: call init_space first")
    ids = [operator.index(i) for i in class_ids]
    bad = [i for i in ids if not 0 <= i < n]
    if bad:
      raise ValueError(f"class ids {bad[:5]} out of range: the space has {n} classes")
    return ids

  # -- meta and space ---------------------------------------------------------------------

  def get_meta(self, key: str, default: str | None = None) -> str | None:
    rows = self._select("SELECT value FROM meta WHERE key = ?", (key,))
    return rows[0][0] if rows else default

  def set_meta(self, key: str, value: str) -> None:
    """Sets a caller's key (e.g. a config fingerprint); keys 'store.*' belong to the store."""
    if key.startswith("store."):
      raise ValueError(f"meta key {key!r} is reserved for the store itself")
    if not isinstance(value, str):
      raise TypeError(f"meta values are text, got {type(value).__name__} for {key!r}")
    with self._transaction("cannot write meta") as db:
      db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

  def init_space(self, schema: str, classes: list[list[str]]) -> None:
    """Writes the space on first call; on later calls (a resumed search) checks it is the same.

    Args:
      schema: the space's schema, e.g. 'binary(unary(x),unary(x))'.
      classes: equivalence classes, representative first; class i gets class_id i.

    Raises:
      StoreError: the file already holds a different space.
      ValueError: a class is empty or a name is in two classes.
    """
    classes = [[str(name) for name in members] for members in classes]
    digest = space_digest(schema, classes)
    with self._transaction("cannot write the space") as db:
      stored = dict(db.execute("SELECT key, value FROM meta WHERE key IN (?, ?, ?)",
                               ("store.space_schema", "store.space_digest",
                                "store.space_classes")))
      if stored:
        if stored["store.space_digest"] != digest:
          raise StoreError(
              f"{self.path} holds a search of space {stored['store.space_schema']!r} with "
              f"{stored['store.space_classes']} classes; this config searches space "
              f"{schema!r} with {len(classes)} classes{self._first_difference(classes)}: "
              "use another --workdir")
        return
      owner: dict[str, int] = {}
      for class_id, members in enumerate(classes):
        if not members:
          raise ValueError(f"class {class_id} is empty")
        for name in members:
          if owner.setdefault(name, class_id) != class_id:
            raise ValueError(f"{name!r} is in classes {owner[name]} and {class_id}")
      db.executemany("INSERT INTO classes VALUES (?, ?)",
                     ((i, members[0]) for i, members in enumerate(classes)))
      db.executemany("INSERT INTO functions VALUES (?, ?, ?)",
                     ((name, i, position) for i, members in enumerate(classes)
                      for position, name in enumerate(members)))
      db.executemany("INSERT INTO meta VALUES (?, ?)", [
          ("store.space_schema", schema), ("store.space_digest", digest),
          ("store.space_classes", str(len(classes)))])
    self._num_classes = len(classes)

  def _first_difference(self, classes: list[list[str]]) -> str:
    """Where the stored classes and `classes` part, for the mismatch message."""
    for class_id, (stored, given) in enumerate(zip(self.classes(), classes)):
      if stored != given:
        return f" (first differing class {class_id}: stored {stored}, given {given})"
    return ""

  @property
  def num_classes(self) -> int:
    """The number of equivalence classes; 0 before init_space."""
    if self._num_classes is None:
      count = self.get_meta("store.space_classes")
      if count is None:
        return 0
      self._num_classes = int(count)  # the space never changes once written: cache it
    return self._num_classes

  def classes(self) -> list[list[str]]:
    """The classes as given to init_space, representative first."""
    classes: list[list[str]] = [[] for _ in range(self.num_classes)]
    for name, class_id in self._select("SELECT name, class_id FROM functions "
                                       "ORDER BY class_id, position"):
      classes[class_id].append(name)
    return classes

  def class_of(self, name: str) -> int | None:
    """The class id of any member name, or None if the space lacks it."""
    rows = self._select("SELECT class_id FROM functions WHERE name = ?", (name,))
    return rows[0][0] if rows else None

  # -- features ---------------------------------------------------------------------------

  def put_features(self, kind: str, class_ids: Iterable[int], rows: np.ndarray) -> None:
    """Stores (or replaces) feature rows of one kind, in one transaction; call per chunk.

    Raises:
      StoreError: the width differs from the rows of this kind already stored.
    """
    ids = self._ids(class_ids)
    rows = np.asarray(rows, dtype="<f4")
    if rows.ndim != 2 or rows.shape[0] != len(ids):
      raise ValueError(f"expected rows of shape ({len(ids)}, d), got {rows.shape}")
    width = rows.shape[1]
    with self._transaction(f"cannot write {kind} features") as db:
      stored = db.execute("SELECT width FROM feature_kinds WHERE kind = ?", (kind,)).fetchone()
      if stored is None:
        db.execute("INSERT INTO feature_kinds VALUES (?, ?)", (kind, width))
      elif stored[0] != width:
        raise StoreError(f"{self.path}: {kind} features are {stored[0]} wide; "
                         f"refusing rows {width} wide")
      db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?)",
                     ((kind, i, row.tobytes()) for i, row in zip(ids, rows)))

  def features(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(num_classes, d) float32 rows, NaN where missing, and the mask of rows present."""
    with self._transaction(f"cannot read {kind} features", "DEFERRED") as db:  # one snapshot
      stored = db.execute("SELECT width FROM feature_kinds WHERE kind = ?", (kind,)).fetchone()
      width = 0 if stored is None else stored[0]
      values = np.full((self.num_classes, width), np.nan, np.float32)
      present = np.zeros(self.num_classes, bool)
      for class_id, blob in db.execute("SELECT class_id, row FROM features WHERE kind = ?",
                                       (kind,)):
        if len(blob) != 4 * width:
          raise StoreError(f"{self.path}: {kind} feature row of class {class_id} has "
                           f"{len(blob)} bytes, expected {4 * width} ({width} float32)")
        values[class_id] = np.frombuffer(blob, "<f4")
        present[class_id] = True
    return values, present

  # -- claims -----------------------------------------------------------------------------

  def claim(self, candidates: Iterable[int], k: int, worker: str, ttl_s: float, *,
            dead: Callable[[str], bool] | None = None) -> list[int]:
    """Claims up to k unevaluated classes from `candidates` (best first) for `worker`.

    A class claimed by another worker is skipped until its claim expires, or at once when
    `dead(owner)` says that worker has ended (a killed process on this machine); its claims
    are then taken over. Classes this worker already holds come first, so that a
    worker restarted under the same name resumes its unfinished classes instead of leaving
    them claimed (its heartbeat would keep them from ever expiring); the rest follow in
    candidate order. One IMMEDIATE transaction: concurrent workers never get the same class.

    Returns:
      The ids claimed (expiring ttl_s from now), in candidate order.
    """
    ids = list(dict.fromkeys(self._ids(candidates)))
    with self._transaction("cannot claim") as db:
      now = time.time()
      done = {row[0] for row in db.execute("SELECT class_id FROM evaluations")}
      held = {i: (owner, expires) for i, owner, expires in
              db.execute("SELECT class_id, worker, expires_at FROM claims")}
      open_ids = [i for i in ids if i not in done]
      own = [i for i in open_ids if held.get(i, ("",))[0] == worker]
      free = [i for i in open_ids
              if i not in held or (held[i][0] != worker and (
                  held[i][1] <= now or (dead is not None and dead(held[i][0]))))]
      chosen = set((own + free)[:max(k, 0)])
      granted = [i for i in ids if i in chosen]
      db.executemany("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)",
                     ((i, worker, now + ttl_s) for i in granted))
    return granted

  def heartbeat(self, worker: str, ttl_s: float) -> None:
    """Extends all of the worker's claims to ttl_s from now."""
    with self._transaction("cannot extend claims") as db:
      db.execute("UPDATE claims SET expires_at = ? WHERE worker = ?", (time.time() + ttl_s,
                                                                      worker))

  def release(self, class_ids: Iterable[int], worker: str) -> None:
    """Gives up the worker's claims on these classes (others' claims are left alone)."""
    ids = self._ids(class_ids)
    with self._transaction("cannot release claims") as db:
      db.executemany("DELETE FROM claims WHERE class_id = ? AND worker = ?",
                     ((i, worker) for i in ids))

  def claimed_ids(self, *, include_expired: bool = False) -> dict[int, str]:
    """Claimed class id -> worker; unexpired claims only unless include_expired."""
    limit = -math.inf if include_expired else time.time()
    return dict(self._select("SELECT class_id, worker FROM claims WHERE expires_at > ? "
                             "ORDER BY class_id", (limit,)))

  # -- evaluations ------------------------------------------------------------------------

  def record(self, evaluation: Evaluation, *, journaled: bool = False) -> bool:
    """Records an evaluation and drops its class's claim, in one transaction, appending it to
    the journal first (unless it comes from there: `journaled`).

    Returns:
      False, recording nothing, if the class already has an evaluation (the first stays).
    """
    (class_id,) = self._ids([evaluation.class_id])
    if evaluation.status not in STATUSES:
      raise ValueError(f"status must be one of {STATUSES}, got {evaluation.status!r}")
    metrics = _to_json({str(key): float(value) for key, value in evaluation.metrics.items()})
    per_seed = _to_json(list(evaluation.per_seed))
    finished_at = evaluation.finished_at or time.time()
    with self._transaction("cannot record an evaluation") as db:
      if db.execute("SELECT 1 FROM evaluations WHERE class_id = ?", (class_id,)).fetchone():
        return False
      if not journaled:  # inside the write lock: the journal's order is the store's
        (name,) = db.execute("SELECT name FROM classes WHERE class_id = ?",
                             (class_id,)).fetchone()
        recipe = db.execute("SELECT value FROM meta WHERE key = 'recipe'").fetchone()
        journal.append(self.journal_path, {
            "class_id": class_id, "name": name, "status": evaluation.status,
            "metrics": metrics, "per_seed": per_seed,
            "runtime_s": float(evaluation.runtime_s), "worker": evaluation.worker,
            "finished_at": finished_at, "recipe": recipe[0] if recipe else None})
      db.execute("INSERT INTO evaluations (class_id, status, metrics, per_seed, runtime_s, "
                 "worker, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (class_id, evaluation.status, metrics, per_seed, float(evaluation.runtime_s),
                  evaluation.worker, finished_at))
      db.execute("DELETE FROM claims WHERE class_id = ?", (class_id,))
    return True

  def replay_journal(self) -> int:
    """Records the journal's evaluations the store lacks (a process killed between the journal
    and the commit); returns how many. Lines of another space (names differ) are skipped."""
    classes = self.classes()
    replayed = 0
    for record in journal.read(self.journal_path):
      class_id = record["class_id"]
      if not 0 <= class_id < len(classes) or classes[class_id][0] != record.get("name"):
        continue
      evaluation = evaluation_from_record(record)
      if evaluation is not None and self.record(evaluation, journaled=True):
        replayed += 1
    return replayed

  def evaluations(self) -> dict[int, Evaluation]:
    """Every evaluation, keyed by class id, in the order they were recorded."""
    rows = self._select("SELECT class_id, status, metrics, per_seed, runtime_s, worker, "
                        "finished_at FROM evaluations ORDER BY seq")
    evaluations = {}
    for class_id, status, metrics, per_seed, runtime_s, worker, finished_at in rows:
      try:
        metrics = {key: float(value) for key, value in _from_json(metrics).items()}
        per_seed = _from_json(per_seed)
      except (ValueError, TypeError, AttributeError) as e:
        raise StoreError(f"{self.path}: unreadable evaluation of class {class_id}: {e}") from e
      evaluations[class_id] = Evaluation(class_id, status, metrics, per_seed, runtime_s,
                                         worker, finished_at)
    return evaluations

  def evaluated_ids(self) -> set[int]:
    return {row[0] for row in self._select("SELECT class_id FROM evaluations")}


def evaluation_from_record(record: dict) -> Evaluation | None:
  """The Evaluation of a journal record (see `Store.record`), or None when it is damaged."""
  try:
    metrics = {key: float(value) for key, value in _from_json(record["metrics"]).items()}
    return Evaluation(int(record["class_id"]), str(record["status"]), metrics,
                      list(_from_json(record["per_seed"])), float(record["runtime_s"]),
                      str(record.get("worker", "")), float(record["finished_at"]))
  except (KeyError, ValueError, TypeError, AttributeError):
    return None
