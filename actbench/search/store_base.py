"""What every search store does, whatever holds it: the logic shared by the SQLite file in the
workdir (store.py) and the PostgreSQL database many machines share (postgres_store.py).

A store holds one search: the equivalence classes of its space (class ids are positions in the
list given to `init_space`), feature rows per kind, the evaluation of each class, and which
worker holds which class (for training, or for a kind of features). Every operation below is
one transaction, run by the backend's `_run`, which retries it when the connection is lost;
the SQL is the same for both backends (`?` placeholders, `ON CONFLICT` upserts).

Claims are safe under concurrency in both: SQLite serializes whole write transactions
(BEGIN IMMEDIATE), PostgreSQL locks the claimed classes' rows (`FOR UPDATE SKIP LOCKED`: a
class another worker is claiming or recording this instant is skipped, never waited for) and
reads the claims and results after taking the locks.

Every evaluation is also appended to a journal (journal.py) before it is committed, with the
fingerprints of the search (recipe, data, model): a store that is lost, damaged or unreachable
loses no result, and a journal is never replayed into a store of another recipe.

Feature rows are float32 BLOBs in the codec their kind got at its first write (`put_features`,
`compress`): 'raw', little-endian float32 as they are, or 'shuffle-zlib', lossless and about
4.75 times smaller on Fisher CDF rows. A kind never changes codec: rows written raw by an older
actbench stay readable next to any written later.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import operator
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from absl import logging
import numpy as np

from actbench import errors
from actbench.search import journal

# Bump on any change of the tables below or of what their values mean (store.py migrates older
# files). 3: the rows of a kind may be compressed (CODECS), which version 2 would misread.
# 4: an evaluation may be 'stopped' (successive halving), which version 3 would count as failed.
FORMAT_VERSION = 4
STATUSES = ("ok", "failed", "stopped")
TRAIN = "train"  # the task of a training claim; a feature kind's claims carry the kind
FINGERPRINTS = ("recipe", "data", "model")  # meta keys of what the results depend on

_FLOAT_TAG = "$float"  # {"$float": "nan"} stands for a non-finite float in stored JSON
_CHUNK = 500  # class ids per statement: below every backend's limit on parameters

# How a kind's feature rows are stored, kept in meta 'store.codec.<kind>' from the kind's first
# write on; absent means 'raw' (every row of a store of version 2). 'shuffle-zlib': the
# float32 bytes regrouped by significance (all first bytes, then all second bytes, ...), then
# zlib: the exponent and high mantissa bytes of values in [0, 1] repeat, and grouped they
# compress well (~4.75x on Fisher CDF rows).
RAW, SHUFFLE_ZLIB = "raw", "shuffle-zlib"
CODECS = (RAW, SHUFFLE_ZLIB)
_CODEC_KEY = "store.codec."
_ZLIB_LEVEL = 6  # zlib's default trade-off of speed and size; the ratio above is at 6

# Column types differ by backend: {blob}, {real}, {serial} are filled in by each.
TABLES = {
    "meta": "key TEXT PRIMARY KEY, value TEXT NOT NULL",
    "classes": "class_id INTEGER PRIMARY KEY, name TEXT NOT NULL",
    "functions": "name TEXT PRIMARY KEY, class_id INTEGER NOT NULL, position INTEGER NOT NULL",
    "feature_kinds": "kind TEXT PRIMARY KEY, width INTEGER NOT NULL",
    "features": "kind TEXT NOT NULL, class_id INTEGER NOT NULL, row {blob} NOT NULL, "
                "PRIMARY KEY (kind, class_id)",
    # seq orders evaluations as recorded; never reused.
    "evaluations": "seq {serial}, class_id INTEGER NOT NULL UNIQUE, "
                   "status TEXT NOT NULL, metrics TEXT NOT NULL, per_seed TEXT NOT NULL, "
                   "runtime_s {real} NOT NULL, worker TEXT NOT NULL, finished_at {real} NOT NULL",
    # task: 'train', or the feature kind being computed.
    "claims": "task TEXT NOT NULL, class_id INTEGER NOT NULL, worker TEXT NOT NULL, "
              "expires_at {real} NOT NULL, PRIMARY KEY (task, class_id)",
}


class StoreError(errors.InputError, RuntimeError):
  """The store is damaged, foreign, of another version, unreachable, or holds another search."""


class DamagedStoreError(StoreError):
  """The store file is damaged (truncated, overwritten): `--config.mode=recover` rebuilds it.
  A foreign file, a newer format version or a lock held too long are other StoreErrors."""


CURVE_MARK = "@"  # metrics "validation_accuracy@3": a learning curve's value after epoch 3


def curve_key(name: str, epoch: int) -> str:
  """The metrics key of a learning curve's value after `epoch` (1-based)."""
  return f"{name}{CURVE_MARK}{int(epoch)}"


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """The result of training one equivalence class (all seeds).

  `metrics` holds the final figures (medians over seeds, e.g. validation_accuracy; NaN
  allowed), `epochs` (what the class trained) and the learning curves, one value per epoch
  under `curve_key` (read them with `curve`). Status 'stopped': successive halving stopped
  the class early, its figures are those of its last epoch."""
  class_id: int
  status: str  # 'ok' | 'failed' | 'stopped'
  metrics: dict[str, float]
  per_seed: list[dict]
  runtime_s: float
  worker: str = ""
  finished_at: float = 0.0  # seconds since the epoch; 0 means "when recorded"

  def curve(self, name: str = "validation_accuracy") -> list[float]:
    """A learning curve, e.g. 'validation_accuracy': its value after each epoch, in order
    ([] where none was recorded)."""
    prefix = f"{name}{CURVE_MARK}"
    points = {int(key[len(prefix):]): value for key, value in self.metrics.items()
              if key.startswith(prefix) and key[len(prefix):].isdigit()}
    return [points.get(epoch, math.nan) for epoch in range(1, max(points, default=0) + 1)]


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


def to_json(value: Any) -> str:
  return json.dumps(_encode(value), allow_nan=False)


def from_json(text: str) -> Any:
  def untag(obj: dict) -> Any:
    return float(obj[_FLOAT_TAG]) if obj.keys() == {_FLOAT_TAG} else obj
  return json.loads(text, object_hook=untag)


def space_digest(schema: str, classes: list[list[str]]) -> str:
  """A fingerprint of a space: its schema and its classes, members and order included."""
  payload = json.dumps([schema, classes], separators=(",", ":"))
  return hashlib.sha256(payload.encode()).hexdigest()


def evaluation_from_record(record: dict) -> Evaluation | None:
  """The Evaluation of a journal record (see `SearchStore.record`), or None when damaged."""
  try:
    metrics = {key: float(value) for key, value in from_json(record["metrics"]).items()}
    return Evaluation(int(record["class_id"]), str(record["status"]), metrics,
                      list(from_json(record["per_seed"])), float(record["runtime_s"]),
                      str(record.get("worker", "")), float(record["finished_at"]))
  except (KeyError, ValueError, TypeError, AttributeError):
    return None


def foreign_fingerprint(record: dict, stored: dict[str, str | None]) -> str | None:
  """Which fingerprint ('recipe', 'data', 'model') of a journal record differs from the
  store's, 'none' for a record that carries none, or None when it is this search's. A record
  written before a fingerprint was kept may lack it; one it carries must match."""
  carried = {key: record.get(key) for key in FINGERPRINTS if record.get(key) is not None}
  if not carried:  # unattributable, unless the store has no fingerprint either
    return "none" if any(value is not None for value in stored.values()) else None
  for key, value in carried.items():
    if stored.get(key) is not None and value != stored[key]:
      return key
  return None


def _batches(items: Sequence, size: int = _CHUNK):
  for start in range(0, len(items), size):
    yield items[start:start + size]


def _marks(n: int) -> str:
  return ", ".join("?" * n)


def encode_rows(rows: np.ndarray, codec: str) -> list[bytes]:
  """The BLOB of each row of a (n, width) array, in `codec` (one of CODECS)."""
  rows = np.ascontiguousarray(rows, "<f4")
  if codec == RAW:
    return [row.tobytes() for row in rows]
  if codec == SHUFFLE_ZLIB:
    n, width = rows.shape
    # (n, width, 4) bytes -> (n, 4, width): row i is then its floats' first bytes, then their
    # second bytes, ...; the same bytes as row.view(np.uint8).reshape(-1, 4).T.tobytes().
    shuffled = np.ascontiguousarray(rows.view(np.uint8).reshape(n, width, 4).transpose(0, 2, 1))
    return [zlib.compress(row.tobytes(), _ZLIB_LEVEL) for row in shuffled]
  raise ValueError(f"unknown feature codec {codec!r}; known: {CODECS}")


def decode_row(blob: bytes, codec: str, width: int) -> np.ndarray:
  """The float32 row `encode_rows` made `blob` of, bit for bit (NaN payloads included).

  Raises:
    ValueError: the blob does not decode to `width` float32 (damaged, or of another width),
      or the codec is unknown.
  """
  blob = bytes(blob)
  if codec == RAW:
    if len(blob) != 4 * width:
      raise ValueError(f"has {len(blob)} bytes, expected {4 * width} ({width} float32)")
    return np.frombuffer(blob, "<f4")
  if codec != SHUFFLE_ZLIB:
    raise ValueError(f"is in an unknown codec {codec!r} (known: {CODECS})")
  inflate = zlib.decompressobj()
  try:
    # At most one byte more than a row: a damaged blob cannot inflate without bound.
    data = inflate.decompress(blob, 4 * width + 1)
  except zlib.error as e:
    raise ValueError(f"does not decompress ({e})") from e
  expected = f"expected {4 * width} ({width} float32)"
  if len(data) > 4 * width:
    raise ValueError(f"decompresses to more than {4 * width} bytes, {expected}")
  if not inflate.eof:
    raise ValueError(f"is cut short: {len(data)} bytes before its zlib stream ends, {expected}")
  if inflate.unused_data:
    raise ValueError(f"has {len(inflate.unused_data)} bytes after its zlib stream")
  if len(data) != 4 * width:
    raise ValueError(f"decompresses to {len(data)} bytes, {expected}")
  return np.frombuffer(data, np.uint8).reshape(4, width).T.copy().view("<f4").reshape(width)


class Tx:
  """What a transaction body may do: statements with `?` placeholders, rows back as tuples."""

  def execute(self, sql: str, args: Sequence = ()) -> list[tuple]:
    raise NotImplementedError

  def executemany(self, sql: str, rows: Iterable[Sequence]) -> None:
    raise NotImplementedError


class SearchStore:
  """A search's store, shared by worker processes. Backends implement `_run`,
  `_lock_classes`, `reopen`, `close` and set `location` (a path, or a URL without password)
  and `journal_path` (where this process journals what it records)."""

  location: str = ""
  journal_path: str = ""
  _num_classes: int | None = None

  # -- the backend's part -------------------------------------------------------------------

  def _run(self, doing: str, body: Callable[[Tx], Any], *, write: bool = True) -> Any:
    """Runs body(tx) as one transaction (a write transaction when `write`) and returns what
    it returns; raises StoreError naming the store and `doing` when it cannot."""
    raise NotImplementedError

  def _lock_classes(self, tx: Tx, ids: Sequence[int], *, wait: bool) -> list[int]:
    """Locks the rows of these classes until the transaction ends and returns those locked:
    all of them when `wait`, else those no other transaction holds (in the order given)."""
    raise NotImplementedError

  def reopen(self) -> SearchStore:
    """Another connection to the same store (a heartbeat thread's own)."""
    raise NotImplementedError

  def close(self) -> None:
    raise NotImplementedError

  def __enter__(self):
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  @property
  def path(self) -> str:
    """The store's location, for messages (kept under its first name)."""
    return self.location

  def _select(self, sql: str, args: Sequence = ()) -> list[tuple]:
    return self._run("cannot read", lambda tx: tx.execute(sql, args), write=False)

  def _ids(self, class_ids: Iterable[int]) -> list[int]:
    """Class ids as ints, each checked against the space."""
    n = self.num_classes
    if n == 0:
      raise StoreError(f"{self.location} holds no search space yet: call init_space first")
    ids = [operator.index(i) for i in class_ids]
    bad = [i for i in ids if not 0 <= i < n]
    if bad:
      raise ValueError(f"class ids {bad[:5]} out of range: the space has {n} classes")
    return ids

  # -- meta and space -----------------------------------------------------------------------

  def get_meta(self, key: str, default: str | None = None) -> str | None:
    rows = self._select("SELECT value FROM meta WHERE key = ?", (key,))
    return rows[0][0] if rows else default

  def fingerprints(self) -> dict[str, str | None]:
    """The store's recipe, data and model fingerprints (None where not recorded yet)."""
    if self._fingerprint_cache is not None:
      return dict(self._fingerprint_cache)
    rows = dict(self._select(f"SELECT key, value FROM meta WHERE key IN "
                             f"({_marks(len(FINGERPRINTS))})", FINGERPRINTS))
    # Set once per search, when its first worker starts (check_recipe): kept for journaling
    # while the database is away.
    self._fingerprint_cache = {key: rows.get(key) for key in FINGERPRINTS}
    return dict(self._fingerprint_cache)

  @staticmethod
  def _check_meta(key: str, value: str) -> None:
    if key.startswith("store."):
      raise ValueError(f"meta key {key!r} is reserved for the store itself")
    if not isinstance(value, str):
      raise TypeError(f"meta values are text, got {type(value).__name__} for {key!r}")

  def set_meta(self, key: str, value: str) -> None:
    """Sets a caller's key (e.g. a config fingerprint); keys 'store.*' belong to the store."""
    self._check_meta(key, value)
    self._fingerprint_cache = None
    self._run("cannot write meta", lambda tx: tx.execute(
        "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value)))

  def set_meta_if_absent(self, key: str, value: str) -> str:
    """Sets `key` unless it is set, atomically (two workers starting together agree);
    returns the value stored."""
    self._check_meta(key, value)
    self._fingerprint_cache = None

    def body(tx):
      tx.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (key, value))
      return tx.execute("SELECT value FROM meta WHERE key = ?", (key,))[0][0]
    return self._run("cannot write meta", body)

  def init_space(self, schema: str, classes: list[list[str]]) -> None:
    """Writes the space on first call; on later calls (a resumed search) checks it is the same.

    Args:
      schema: the space's schema, e.g. 'binary(unary(x),unary(x))'.
      classes: equivalence classes, representative first; class i gets class_id i.

    Raises:
      StoreError: the store already holds a different space.
      ValueError: a class is empty or a name is in two classes.
    """
    classes = [[str(name) for name in members] for members in classes]
    digest = space_digest(schema, classes)
    owner: dict[str, int] = {}
    for class_id, members in enumerate(classes):
      if not members:
        raise ValueError(f"class {class_id} is empty")
      for name in members:
        if owner.setdefault(name, class_id) != class_id:
          raise ValueError(f"{name!r} is in classes {owner[name]} and {class_id}")

    def body(tx):
      self._exclusive(tx)  # two workers starting together write the space once
      stored = dict(tx.execute("SELECT key, value FROM meta WHERE key IN (?, ?, ?)",
                               ("store.space_schema", "store.space_digest",
                                "store.space_classes")))
      if stored:
        return stored
      tx.executemany("INSERT INTO classes VALUES (?, ?)",
                     ((i, members[0]) for i, members in enumerate(classes)))
      tx.executemany("INSERT INTO functions VALUES (?, ?, ?)",
                     ((name, i, position) for i, members in enumerate(classes)
                      for position, name in enumerate(members)))
      tx.executemany("INSERT INTO meta VALUES (?, ?)", [
          ("store.space_schema", schema), ("store.space_digest", digest),
          ("store.space_classes", str(len(classes)))])
      return None

    stored = self._run("cannot write the space", body)
    if stored and stored["store.space_digest"] != digest:
      raise StoreError(
          f"{self.location} holds a search of space {stored['store.space_schema']!r} with "
          f"{stored['store.space_classes']} classes; this config searches space "
          f"{schema!r} with {len(classes)} classes{self._first_difference(classes)}: "
          f"{self.elsewhere}")
    self._num_classes = len(classes)
    self._names = [members[0] for members in classes]

  def load_space(self) -> None:
    """Takes the stored space as this session's, without the caller's classes to check it
    against (a caller that knows the space is the one it asked for: init_space's work done)."""
    self._num_classes = None
    self._names = [row[0] for row in self._select("SELECT name FROM classes ORDER BY class_id")]
    if len(self._names) != self.num_classes:
      raise DamagedStoreError(f"{self.location} lists {len(self._names)} classes of the "
                              f"{self.num_classes} its space has")

  elsewhere = "use another --workdir"  # how to start a search of its own, for messages

  def _exclusive(self, tx: Tx) -> None:
    """Serializes this transaction with every other `_exclusive` one (SQLite's write
    transactions already are)."""

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

  # -- features -----------------------------------------------------------------------------

  def put_features(self, kind: str, class_ids: Iterable[int], rows: np.ndarray, *,
                   compress: bool = False) -> None:
    """Stores (or replaces) feature rows of one kind, in one transaction; call per chunk.
    Drops this kind's claims on these classes (see `claim`).

    Args:
      kind: the kind of features, e.g. 'fisher'.
      class_ids: the classes of the rows.
      rows: (len(class_ids), width) values, stored as float32.
      compress: at the kind's first write, store its rows 'shuffle-zlib' (lossless, ~4.75x
        smaller on Fisher CDF rows) rather than 'raw'. Later writes keep the kind's codec,
        whatever they say: a kind is never part raw, part compressed.

    Raises:
      StoreError: the width differs from the rows of this kind already stored.
    """
    ids = self._ids(class_ids)
    rows = np.asarray(rows, dtype="<f4")
    if rows.ndim != 2 or rows.shape[0] != len(ids):
      raise ValueError(f"expected rows of shape ({len(ids)}, d), got {rows.shape}")
    width = rows.shape[1]

    def body(tx):
      stored = self._kind(tx, kind)
      if stored is None:
        # Two first writes of a kind (workers on several machines) must agree on its codec:
        # the second waits here, then finds the first's kind.
        self._exclusive(tx)
        stored = self._kind(tx, kind)
      if stored is None:
        stored = width, SHUFFLE_ZLIB if compress else RAW
        tx.execute("INSERT INTO feature_kinds VALUES (?, ?)", (kind, width))
        if compress:  # in this transaction: the kind's rows never exist without their codec
          tx.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                     "value = excluded.value", (_CODEC_KEY + kind, SHUFFLE_ZLIB))
      stored_width, codec = stored
      if stored_width != width:
        raise StoreError(f"{self.location}: {kind} features are {stored_width} wide; "
                         f"refusing rows {width} wide")
      tx.executemany("INSERT INTO features VALUES (?, ?, ?) ON CONFLICT (kind, class_id) "
                     "DO UPDATE SET row = excluded.row",
                     ((kind, i, blob) for i, blob in zip(ids, encode_rows(rows, codec))))
      for batch in _batches(ids):
        tx.execute(f"DELETE FROM claims WHERE task = ? AND class_id IN ({_marks(len(batch))})",
                   (kind, *batch))
    self._run(f"cannot write {kind} features", body)

  @staticmethod
  def _kind(tx: Tx, kind: str) -> tuple[int, str] | None:
    """The width and codec of a kind's rows, None before its first write. One statement:
    PostgreSQL gives each statement its own snapshot, and the two are committed together."""
    found = tx.execute("SELECT k.width, m.value FROM feature_kinds k LEFT JOIN meta m ON "
                       "m.key = ? WHERE k.kind = ?", (_CODEC_KEY + kind, kind))
    return (found[0][0], found[0][1] or RAW) if found else None

  def feature_codec(self, kind: str) -> str | None:
    """How the rows of `kind` are stored (one of CODECS); None before its first write."""
    stored = self._run(f"cannot read {kind} features", lambda tx: self._kind(tx, kind),
                       write=False)
    return stored[1] if stored else None

  def feature_presence(self, kind: str) -> tuple[int, np.ndarray]:
    """The width of the rows of `kind` (0 before any) and the mask of classes that have one:
    what `features` says without reading the rows (a loop that polls it stays cheap)."""
    def body(tx):
      ids = [row[0] for row in tx.execute("SELECT class_id FROM features WHERE kind = ?",
                                          (kind,))]
      # After the rows: a row seen implies its kind's width is (see _kind).
      stored = self._kind(tx, kind)
      return (stored[0] if stored else 0), ids
    width, ids = self._run(f"cannot read {kind} features", body, write=False)
    present = np.zeros(self.num_classes, bool)
    present[np.asarray(ids, np.int64)] = True
    return width, present

  def features(self, kind: str, class_ids: Sequence[int] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """The rows of `kind` as float32, NaN where missing, and the mask of rows present.

    Args:
      kind: the kind of features.
      class_ids: None for every class: (num_classes, width) rows. Else the rows of these
        classes only, in this order: (len(class_ids), width), read without the others (a
        space of a million classes need not be read to look at a few).

    Raises:
      StoreError: a stored row does not decode to the kind's width (a damaged row).
      ValueError: a class id is out of the space's range.
    """
    ids = None if class_ids is None else self._ids(class_ids)

    def body(tx):  # one transaction
      if ids is None:
        found = tx.execute("SELECT class_id, row FROM features WHERE kind = ?", (kind,))
      else:
        found = []
        for batch in _batches(sorted(set(ids))):
          found += tx.execute(f"SELECT class_id, row FROM features WHERE kind = ? AND "
                              f"class_id IN ({_marks(len(batch))})", (kind, *batch))
      # After the rows: in PostgreSQL a statement sees what was committed before it began, and
      # a kind's width and codec are committed with (or before) any of its rows.
      return self._kind(tx, kind) or (0, RAW), found
    (width, codec), found = self._run(f"cannot read {kind} features", body, write=False)
    if ids is None:
      position = None
      values = np.full((self.num_classes, width), np.nan, np.float32)
    else:
      position = {}
      for at, i in enumerate(ids):
        position.setdefault(i, []).append(at)
      values = np.full((len(ids), width), np.nan, np.float32)
    present = np.zeros(len(values), bool)
    for class_id, blob in found:
      try:
        row = decode_row(blob, codec, width)
      except ValueError as e:
        raise StoreError(f"{self.location}: {kind} feature row of class {class_id} {e}") from e
      at = class_id if position is None else position[class_id]
      values[at] = row
      present[at] = True
    return values, present

  # -- claims -------------------------------------------------------------------------------

  def claim(self, candidates: Iterable[int], k: int, worker: str, ttl_s: float, *,
            dead: Callable[[str], bool] | None = None, task: str = TRAIN) -> list[int]:
    """Claims up to k classes from `candidates` (best first) for `worker`: to train (task
    'train': classes without an evaluation) or to compute a kind of features (task = the kind:
    classes without a row of it).

    A class claimed by another worker is skipped until its claim expires, or at once when
    `dead(owner)` says that worker has ended (a killed process on this machine); its claims
    are then taken over. Classes this worker already holds come first, so that a worker
    restarted under the same name resumes its unfinished classes instead of leaving them
    claimed (its heartbeat would keep them from ever expiring); the rest follow in candidate
    order. Concurrent workers never get the same class.

    Returns:
      The ids claimed (expiring ttl_s from now), in candidate order.
    """
    ids = list(dict.fromkeys(self._ids(candidates)))
    k = max(int(k), 0)

    def body(tx):
      now = time.time()
      own = {row[0] for row in tx.execute("SELECT class_id FROM claims WHERE task = ? AND "
                                          "worker = ?", (task, worker))}
      ordered = [i for i in ids if i in own] + [i for i in ids if i not in own]
      granted: list[int] = []
      for batch in _batches(ordered, max(4 * k, 64)):
        if len(granted) >= k:
          break
        locked = self._lock_classes(tx, batch, wait=False)
        if not locked:
          continue
        done = self._done(tx, task, locked)
        held = {i: (owner, expires) for i, owner, expires in tx.execute(
            f"SELECT class_id, worker, expires_at FROM claims WHERE task = ? AND class_id IN "
            f"({_marks(len(locked))})", (task, *locked))}
        for i in locked:
          if len(granted) >= k:
            break
          if i in done:
            continue
          owner, expires = held.get(i, (None, 0.0))
          if owner is None or owner == worker or expires <= now or (
              dead is not None and dead(owner)):
            granted.append(i)
      tx.executemany("INSERT INTO claims VALUES (?, ?, ?, ?) ON CONFLICT (task, class_id) DO "
                     "UPDATE SET worker = excluded.worker, expires_at = excluded.expires_at",
                     ((task, i, worker, now + ttl_s) for i in granted))
      return set(granted)

    chosen = self._run("cannot claim", body)
    return [i for i in ids if i in chosen]

  def _done(self, tx: Tx, task: str, ids: Sequence[int]) -> set[int]:
    if task == TRAIN:
      sql, args = f"SELECT class_id FROM evaluations WHERE class_id IN ({_marks(len(ids))})", ids
    else:
      sql = (f"SELECT class_id FROM features WHERE kind = ? AND class_id IN "
             f"({_marks(len(ids))})")
      args = (task, *ids)
    return {row[0] for row in tx.execute(sql, tuple(args))}

  def heartbeat(self, worker: str, ttl_s: float) -> set[tuple[str, int]]:
    """Extends all of the worker's claims to ttl_s from now; returns the (task, class id)
    pairs it still holds (a claim another worker took over while this one was cut off is not
    among them)."""
    def body(tx):
      tx.execute("UPDATE claims SET expires_at = ? WHERE worker = ?", (time.time() + ttl_s,
                                                                      worker))
      return {(task, i) for task, i in tx.execute(
          "SELECT task, class_id FROM claims WHERE worker = ?", (worker,))}
    return self._run("cannot extend claims", body)

  def release(self, class_ids: Iterable[int], worker: str, *, task: str = TRAIN) -> None:
    """Gives up the worker's claims on these classes (others' claims are left alone)."""
    ids = self._ids(class_ids)
    self._run("cannot release claims", lambda tx: tx.executemany(
        "DELETE FROM claims WHERE task = ? AND class_id = ? AND worker = ?",
        ((task, i, worker) for i in ids)))

  def claimed_ids(self, *, include_expired: bool = False, task: str = TRAIN) -> dict[int, str]:
    """Claimed class id -> worker; unexpired claims only unless include_expired."""
    limit = -math.inf if include_expired else time.time()
    return dict(self._select("SELECT class_id, worker FROM claims WHERE task = ? AND "
                             "expires_at > ? ORDER BY class_id", (task, limit)))

  # -- evaluations --------------------------------------------------------------------------

  def record(self, evaluation: Evaluation, *, journaled: bool = False) -> bool:
    """Records an evaluation and drops its class's training claims, in one transaction,
    appending it to the journal first (unless it comes from there: `journaled`).

    Returns:
      False, recording nothing, if the class already has another evaluation (the first
      stays); True when it is recorded, or was already (a retry after a lost connection).
    """
    (class_id,) = self._ids([evaluation.class_id])
    if evaluation.status not in STATUSES:
      raise ValueError(f"status must be one of {STATUSES}, got {evaluation.status!r}")
    evaluation = dataclasses.replace(evaluation,
                                     finished_at=evaluation.finished_at or time.time())
    line = self.journal_line(evaluation, "", {})
    metrics, per_seed, finished_at = line["metrics"], line["per_seed"], line["finished_at"]
    appended = journaled

    def body(tx):
      nonlocal appended
      self._lock_classes(tx, [class_id], wait=True)
      existing = tx.execute("SELECT worker, finished_at, status, metrics, per_seed FROM "
                            "evaluations WHERE class_id = ?", (class_id,))
      if existing:  # this very evaluation (a commit whose answer the connection lost)?
        return tuple(existing[0]) == (evaluation.worker, finished_at, evaluation.status,
                                      metrics, per_seed)
      if not appended:  # after the lock: the journal's order is the store's
        (name,) = tx.execute("SELECT name FROM classes WHERE class_id = ?", (class_id,))[0]
        stored = dict(tx.execute(f"SELECT key, value FROM meta WHERE key IN "
                                 f"({_marks(len(FINGERPRINTS))})", FINGERPRINTS))
        journal.append(self.journal_path, self.journal_line(evaluation, name, stored))
        appended = True
      tx.execute("INSERT INTO evaluations (class_id, status, metrics, per_seed, runtime_s, "
                 "worker, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (class_id, evaluation.status, metrics, per_seed, float(evaluation.runtime_s),
                  evaluation.worker, finished_at))
      tx.execute("DELETE FROM claims WHERE task = ? AND class_id = ?", (TRAIN, class_id))
      return True

    return self._run("cannot record an evaluation", body)

  _journal_first = False  # journal before the transaction (a database that may be away)
  _names: list[str] | None = None  # representatives, once init_space has run
  _fingerprint_cache: dict[str, str | None] | None = None

  def record_many(self, evaluations: Sequence[Evaluation]) -> list[bool]:
    """`record` for each; where the store may be unreachable, all of them are journaled first,
    so that none is lost when the database stays away longer than this process waits."""
    if not self._journal_first:
      return [self.record(evaluation) for evaluation in evaluations]
    for evaluation in evaluations:
      self._append_journal(evaluation)
    return [self.record(evaluation, journaled=True) for evaluation in evaluations]

  def _append_journal(self, evaluation: Evaluation) -> None:
    (class_id,) = self._ids([evaluation.class_id])
    names = self._names
    name = names[class_id] if names else self._select(
        "SELECT name FROM classes WHERE class_id = ?", (class_id,))[0][0]
    journal.append(self.journal_path, self.journal_line(
        evaluation, name, self._fingerprint_cache or self.fingerprints()))

  @staticmethod
  def journal_line(evaluation: Evaluation, name: str, stored: dict) -> dict:
    return {"class_id": int(evaluation.class_id), "name": name, "status": evaluation.status,
            "metrics": to_json({str(k): float(v) for k, v in evaluation.metrics.items()}),
            "per_seed": to_json(list(evaluation.per_seed)),
            "runtime_s": float(evaluation.runtime_s), "worker": evaluation.worker,
            "finished_at": evaluation.finished_at or time.time(),
            **{key: stored.get(key) for key in FINGERPRINTS}}

  def replay_journal(self, path: str | None = None) -> int:
    """Records the journal's evaluations the store lacks (a process killed between the journal
    and the commit, or a database that was unreachable); returns how many. Lines of another
    space (names differ) or of another recipe, data or model are skipped, and counted in one
    log line."""
    path = path or self.journal_path
    classes = self.classes()
    stored = self.fingerprints()
    recorded = self.evaluated_ids()
    replayed, skipped = 0, {}
    for record in journal.read(path):
      class_id = record["class_id"]
      if class_id in recorded:
        continue  # committed (or recorded by another worker first: the journal keeps it)
      if not 0 <= class_id < len(classes) or classes[class_id][0] != record.get("name"):
        reason = "space"
      else:
        reason = foreign_fingerprint(record, stored)
      if reason is not None:
        skipped[reason] = skipped.get(reason, 0) + 1
        continue
      evaluation = evaluation_from_record(record)
      if evaluation is not None and self.record(evaluation, journaled=True):
        replayed += 1
        recorded.add(class_id)
    if skipped:
      logging.warning("%s: skipped %d journal lines of another search (%s): never mixed into "
                      "%s", path, sum(skipped.values()),
                      ", ".join(f"{n} of another {reason}" if reason != "none" else
                                f"{n} without fingerprints" for reason, n in skipped.items()),
                      self.location)
    return replayed

  def evaluations(self) -> dict[int, Evaluation]:
    """Every evaluation, keyed by class id, in the order they were recorded."""
    rows = self._select("SELECT class_id, status, metrics, per_seed, runtime_s, worker, "
                        "finished_at FROM evaluations ORDER BY seq")
    evaluations = {}
    for class_id, status, metrics, per_seed, runtime_s, worker, finished_at in rows:
      try:
        metrics = {key: float(value) for key, value in from_json(metrics).items()}
        per_seed = from_json(per_seed)
      except (ValueError, TypeError, AttributeError) as e:
        raise StoreError(f"{self.location}: unreadable evaluation of class {class_id}: "
                         f"{e}") from e
      evaluations[class_id] = Evaluation(class_id, status, metrics, per_seed, runtime_s,
                                         worker, finished_at)
    return evaluations

  def evaluated_ids(self) -> set[int]:
    return {row[0] for row in self._select("SELECT class_id FROM evaluations")}
