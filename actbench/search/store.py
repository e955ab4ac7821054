"""The persistent record of a search: the SQLite file in the workdir, and where to find a store.

    db = store.open_store("", workdir=DIR, name="")          # DIR/search.sqlite (the default)
    db = store.open_store("postgresql://me@host/db", workdir=DIR, name="cnn-search")

`Store` is one file in the workdir holding everything the search loop must not lose (see
store_base.py for what a store holds and how claims stay safe). Several worker processes of
one host share the file; SQLite's locking makes each write one atomic transaction. Workers on
several machines share a PostgreSQL database instead (postgres_store.py): SQLite over NFS or
Lustre is exactly what SQLite's own documentation warns against (broken POSIX locks).

The file is opened in WAL mode with synchronous=FULL: each commit is fsynced to the log before
`record` returns. NORMAL would already survive a process killed with SIGKILL (a committed
transaction sits in the OS page cache, which the kill does not discard), but not a power loss
or kernel crash; commits here are rare (one per trained function, or per chunk of features),
so the fsync costs nothing next to the hours of training a lost result would cost.

Feature rows are BLOBs of little-endian float32, raw or compressed (store_base.CODECS), their
length checked on read; metrics are JSON with non-finite floats tagged, so that NaN and inf
survive. Nothing read back is evaluated.

Every evaluation is also appended to a journal beside the file (journal.py) before it is
committed: a damaged file is rebuilt from it with `--config.mode=recover` (recovery.py).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from actbench.search import journal, postgres_store
from actbench.search.store_base import (FINGERPRINTS, FORMAT_VERSION, STATUSES, TABLES, TRAIN,
                                        DamagedStoreError, Evaluation, SearchStore, StoreError,
                                        Tx, curve_key, evaluation_from_record,
                                        foreign_fingerprint, space_digest)

__all__ = [
    "FINGERPRINTS", "FORMAT_VERSION", "STATUSES", "TRAIN", "DamagedStoreError", "Evaluation",
    "SearchStore", "Store", "StoreError", "curve_key", "evaluation_from_record",
    "foreign_fingerprint",
    "open_store", "space_digest",
]

APPLICATION_ID = 0x41435442  # b'ACTB': SQLite's header field for "which program's file is this"
FILE_NAME = "search.sqlite"  # in the workdir

_SQLITE_HEADER = b"SQLite format 3\x00"
# Statements taking a store of format version v (the key) to v + 1.
_MIGRATIONS = {
    # 2: claims carry their task (training, or a kind of features being computed).
    1: ("ALTER TABLE claims RENAME TO claims_v1",
        f"CREATE TABLE claims ({TABLES['claims'].format(real='REAL')})",
        f"INSERT INTO claims SELECT '{TRAIN}', class_id, worker, expires_at FROM claims_v1",
        "DROP TABLE claims_v1"),
    # 3: a kind's feature rows may be compressed (meta 'store.codec.<kind>'). No table changes:
    # the bump only keeps an older actbench from misreading compressed rows as raw ones.
    2: (),
    # 4: an evaluation's status may be 'stopped' (successive halving stopped it early), and its
    # metrics carry learning curves. No table changes: the bump keeps an older actbench from
    # counting stopped evaluations as failed ones.
    3: (),
}
_SQLITE_TYPES = {"blob": "BLOB", "real": "REAL", "serial": "INTEGER PRIMARY KEY AUTOINCREMENT"}


def open_store(location: str, *, workdir: str, name: str = "", retry_s: float = 600.0,
               create: bool = True) -> SearchStore:
  """The store of a search: `location` '' (or a path) is an SQLite file (by default
  `workdir/search.sqlite`); a `postgresql://` URL is a database many machines share, holding
  many searches, this one under `name` (made unless not `create`). The journal is
  `workdir/search.evaluations.jsonl` either way: what this worker recorded stays on its
  machine.

  Raises:
    StoreError: the store is refused (damaged, foreign, unreachable...), or `name` is
      missing for a database.
  """
  local = os.path.join(workdir, FILE_NAME)
  if postgres_store.is_database(location):
    os.makedirs(workdir, exist_ok=True)  # the journal's
    return postgres_store.PostgresStore(location, name, journal_path=journal.path_of(local),
                                        retry_s=retry_s, create=create)
  return Store(location or local)


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


class _SqliteTx(Tx):
  def __init__(self, db: sqlite3.Connection):
    self._db = db

  def execute(self, sql: str, args: Sequence = ()) -> list[tuple]:
    return self._db.execute(sql, tuple(args)).fetchall()

  def executemany(self, sql: str, rows) -> None:
    self._db.executemany(sql, rows)


class Store(SearchStore):
  """A search's store file, shared by the worker processes of one host. See the module
  docstring."""

  def __init__(self, path: str | os.PathLike, *, timeout_s: float = 60.0):
    """Opens the store at `path`, creating it (and its directory) if missing.

    Args:
      path: the SQLite file.
      timeout_s: how long a write waits for another process's transaction before failing.

    Raises:
      StoreError: the file is not an actbench store, is damaged or of another format version.
    """
    self.location = os.fspath(path)
    self.journal_path = journal.path_of(self.location)
    os.makedirs(os.path.dirname(os.path.abspath(self.location)), exist_ok=True)
    self._timeout_s = timeout_s
    self._num_classes: int | None = None
    self._db = None
    with self._errors("cannot open"):
      # isolation_level=None: no implicit transactions; every write below says BEGIN itself.
      self._db = sqlite3.connect(self.location, timeout=timeout_s, isolation_level=None)
    try:
      with self._errors("cannot open"):
        self._create_or_validate()  # first: a refused file is left as it was
        mode = self._journal_mode_wal()
        if mode != "wal":
          raise StoreError(f"{self.location}: cannot switch to WAL mode (got {mode!r})")
        self._db.execute("PRAGMA synchronous=FULL")  # why FULL: see the module docstring
    except BaseException:
      self.close()
      raise

  def close(self) -> None:
    if self._db is not None:
      self._db.close()
      self._db = None

  def reopen(self) -> Store:
    return Store(self.location, timeout_s=self._timeout_s)

  # -- plumbing ---------------------------------------------------------------------------

  @contextlib.contextmanager
  def _errors(self, doing: str) -> Iterator[None]:
    """Turns sqlite3's errors into StoreError naming the file."""
    try:
      yield
    except sqlite3.Error as e:
      head = _foreign_header(self.location) if "not a database" in str(e) else None
      if head is not None:
        raise StoreError(f"{self.location} is not an actbench store: not an SQLite database (it "
                         f"starts with {head}); use another --workdir or remove it") from e
      if "locked" in str(e) or "busy" in str(e):
        raise StoreError(f"{self.location}: {doing}: {type(e).__name__}: {e} (another process "
                         f"held it for over {self._timeout_s:g} s)") from e
      hint = ("a damaged file: run the same command with --config.mode=recover to rebuild it "
              "from its journal, or use another --workdir")
      raise DamagedStoreError(f"{self.location}: {doing}: {type(e).__name__}: {e} ({hint})") from e

  @contextlib.contextmanager
  def _transaction(self, doing: str, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
    """One transaction; IMMEDIATE takes the write lock up front, so that a read-then-write
    (claim, record) sees no other writer in between and waits (busy timeout) rather than
    failing on a lock upgrade."""
    if self._db is None:
      raise StoreError(f"{self.location}: the store is closed")
    with self._errors(doing):
      self._db.execute(f"BEGIN {mode}")
      try:
        yield self._db
      except BaseException:
        if self._db.in_transaction:
          self._db.execute("ROLLBACK")
        raise
      self._db.execute("COMMIT")

  def _run(self, doing: str, body: Callable[[Tx], Any], *, write: bool = True) -> Any:
    with self._transaction(doing, "IMMEDIATE" if write else "DEFERRED") as db:
      return body(_SqliteTx(db))

  def _lock_classes(self, tx: Tx, ids: Sequence[int], *, wait: bool) -> list[int]:
    return list(ids)  # BEGIN IMMEDIATE holds the whole file

  def _create_or_validate(self) -> None:
    if self._tables() == set() and self._pragma("application_id") == 0:
      self._journal_mode_wal()  # persistent; not inside a transaction
      with self._transaction("cannot create the store"):
        if not self._tables():  # another process may have created it while we waited
          for name, columns in TABLES.items():
            self._db.execute(f"CREATE TABLE {name} ({columns.format(**_SQLITE_TYPES)})")
          self._db.execute(f"PRAGMA application_id={APPLICATION_ID}")
          self._db.execute(f"PRAGMA user_version={FORMAT_VERSION}")
          self._db.executemany("INSERT INTO meta VALUES (?, ?)", [
              ("store.format", "actbench search store"),
              ("store.version", str(FORMAT_VERSION))])
    application_id, tables = self._pragma("application_id"), self._tables()
    if application_id != APPLICATION_ID:
      raise StoreError(f"{self.location} is an SQLite database but not an actbench store "
                       f"(application_id {application_id:#x}, tables {sorted(tables)}); "
                       "use another --workdir")
    if self._pragma("user_version") > FORMAT_VERSION:
      raise StoreError(f"{self.location} is an actbench store of format version "
                       f"{self._pragma('user_version')}; this actbench reads version "
                       f"{FORMAT_VERSION}: upgrade actbench")
    if not set(TABLES) <= tables:
      raise DamagedStoreError(f"{self.location}: actbench store without tables "
                              f"{sorted(set(TABLES) - tables)}")
    # Reads every page: a truncated or overwritten file fails here, not mid-search.
    problems = [row[0] for row in self._db.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
      raise DamagedStoreError(
          f"{self.location}: the store is damaged: {'; '.join(problems)}. Run the same command "
          "with --config.mode=recover to rebuild it: every evaluation is kept in "
          f"{journal.path_of(self.location)}")
    if self._pragma("user_version") in _MIGRATIONS:  # after the check: never write to damage
      self._migrate()
    version = self._pragma("user_version")
    if version != FORMAT_VERSION:
      raise StoreError(f"{self.location} is an actbench store of format version {version}; "
                       f"this actbench reads version {FORMAT_VERSION}")

  def _migrate(self) -> None:
    """Brings a store of an older format version to this one, in one transaction."""
    with self._transaction("cannot upgrade the store"):
      version = self._pragma("user_version")  # another process may have migrated it
      while version in _MIGRATIONS:
        for statement in _MIGRATIONS[version]:
          self._db.execute(statement)
        version += 1
        self._db.execute(f"PRAGMA user_version={version}")
        self._db.execute("UPDATE meta SET value = ? WHERE key = 'store.version'",
                         (str(version),))

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
