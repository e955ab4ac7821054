"""Compressed feature rows in both stores (SQLite, and PostgreSQL against a real server): read
back bit for bit, smaller on disk, a kind's codec fixed at its first write, a few rows read
without the others, and stores of format version 1 and 2 upgraded while a newer one is
refused."""

from __future__ import annotations

import sqlite3
import threading
import zlib

import numpy as np
import pytest

from actbench.search import store as store_lib
from actbench.search import store_base
from actbench.search.store import StoreError

SCHEMA = "binary(unary(x),unary(x))"
WIDTH = 378  # a Fisher CDF row's
N = 40


def _classes(n: int) -> list[list[str]]:
  return [[f"rep{i}(x)"] + [f"alias{i}_{j}(x)" for j in range(i % 3)] for i in range(n)]


def _cdf_rows(seed: int, n: int = N, width: int = WIDTH) -> np.ndarray:
  """Rows like Fisher CDFs: sorted values in [0, 1] with many repeats, plus the values a
  codec could get wrong: all-NaN rows, inf, -0.0, a subnormal, NaNs of other payloads."""
  rng = np.random.default_rng(seed)
  rows = np.empty((n, width), np.float32)
  for i in range(n):
    levels = rng.uniform(size=80).astype(np.float32)
    rows[i] = np.sort(rng.choice(levels, width))
  rows[3 % n] = np.nan
  rows[n - 1] = np.nan
  rows[5 % n, -1] = np.inf
  rows[5 % n, 0] = -np.inf
  rows[6 % n, 1:4] = [-0.0, np.float32(1e-45), np.float32(3.4e38)]
  bits = rows.view(np.uint32)
  bits[7 % n, 4] = 0x7FC12345  # a quiet NaN with a payload
  bits[7 % n, 5] = 0xFFC00001  # a negative one
  bits[7 % n, 6] = 0x7F800001  # a signalling one
  return rows


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
  return a.dtype == b.dtype == np.float32 and np.array_equal(a.view(np.uint32),
                                                             b.view(np.uint32))


class _Sqlite:
  """The SQLite store, and its file read and written directly."""

  def __init__(self, tmp_path):
    self.path = str(tmp_path / "store.db")

  def open(self) -> store_lib.SearchStore:
    return store_lib.Store(self.path)

  def sql(self, sql: str, args=()) -> list[tuple]:
    db = sqlite3.connect(self.path)
    try:
      with db:
        return db.execute(sql, args).fetchall()
    finally:
      db.close()


class _Postgres:
  """The search 's' of a fresh PostgreSQL database, and its tables read and written directly."""

  def __init__(self, tmp_path, url: str):
    self.url, self.workdir = url, str(tmp_path)

  def open(self) -> store_lib.SearchStore:
    return store_lib.open_store(self.url, workdir=self.workdir, name="s")

  def sql(self, sql: str, args=()) -> list[tuple]:
    import psycopg  # pylint: disable=import-outside-toplevel
    with psycopg.connect(self.url, autocommit=True) as db:
      db.execute("SET search_path TO actbench_s")
      cursor = db.execute(sql.replace("?", "%s"), args)
      return cursor.fetchall() if cursor.description else []


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
  if request.param == "sqlite":
    return _Sqlite(tmp_path)
  return _Postgres(tmp_path, request.getfixturevalue("postgres_url"))


def _blobs(backend, kind: str) -> dict[int, bytes]:
  return {i: bytes(blob) for i, blob in backend.sql(
      "SELECT class_id, row FROM features WHERE kind = ?", (kind,))}


# -- both stores --------------------------------------------------------------------------------


def test_compressed_rows_read_back_bit_for_bit(backend):
  rows = _cdf_rows(0)
  with backend.open() as db:
    db.init_space(SCHEMA, _classes(N + 5))  # the last 5 classes get no row
    db.put_features("fisher", range(0, 25), rows[:25], compress=True)
    db.put_features("fisher", range(25, N), rows[25:], compress=True)
    assert db.feature_codec("fisher") == "shuffle-zlib"
    assert db.get_meta("store.codec.fisher") == "shuffle-zlib"
    values, present = db.features("fisher")
    assert values.shape == (N + 5, WIDTH) and _same_bits(values[:N], rows)
    assert present.tolist() == [True] * N + [False] * 5 and np.isnan(values[N:]).all()
    # A few rows, in any order, missing ones and repeats included.
    ids = [N + 2, 7, 0, 3, N - 1, 7, 30]
    some, there = db.features("fisher", ids)
    assert there.tolist() == [False, True, True, True, True, True, True]
    assert _same_bits(some[1:], rows[[7, 0, 3, N - 1, 7, 30]]) and np.isnan(some[0]).all()
    assert db.feature_presence("fisher")[0] == WIDTH
  # The stored bytes are the documented format: the float32 bytes regrouped, then zlib.
  blob = _blobs(backend, "fisher")[9]
  assert zlib.decompress(blob) == rows[9].view(np.uint8).reshape(-1, 4).T.tobytes()


def test_a_few_rows_are_read_without_the_others(backend):
  with backend.open() as db:
    db.init_space(SCHEMA, _classes(1200))  # more ids than one statement takes (_CHUNK)
    rows = np.arange(600 * 3, dtype=np.float32).reshape(600, 3)
    db.put_features("outputs", np.arange(0, 1200, 2), rows, compress=True)  # even classes
    asked = list(range(1199, -1, -1))
    values, present = db.features("outputs", asked)
    assert present.tolist() == [i % 2 == 0 for i in asked]
    np.testing.assert_array_equal(values[present], rows[::-1])
    assert np.isnan(values[~present]).all()
    assert db.features("outputs", [])[0].shape == (0, 3)
    absent, none = db.features("never", [4, 2])
    assert absent.shape == (2, 0) and not none.any()
    with pytest.raises(ValueError, match="out of range"):
      db.features("outputs", [1200])


def test_a_repetitive_row_is_stored_smaller(backend):
  repetitive = np.repeat(np.linspace(0, 1, 6, dtype=np.float32), WIDTH // 6)[None]
  with backend.open() as db:
    db.init_space(SCHEMA, _classes(4))
    db.put_features("fisher", [2], repetitive, compress=True)
    db.put_features("outputs", [2], repetitive)  # not compressed
  assert len(_blobs(backend, "fisher")[2]) < 4 * WIDTH // 10
  assert len(_blobs(backend, "outputs")[2]) == 4 * WIDTH


def test_a_kind_keeps_the_codec_of_its_first_write(backend):
  rows = _cdf_rows(1, n=6, width=20)
  with backend.open() as db:
    db.init_space(SCHEMA, _classes(6))
    db.put_features("raw", [0, 1], rows[:2])
    db.put_features("raw", [2, 3], rows[2:4], compress=True)  # stays raw
    db.put_features("packed", [0, 1], rows[:2], compress=True)
    db.put_features("packed", [2, 3], rows[2:4])  # stays compressed
    assert db.feature_codec("raw") == "raw" and db.get_meta("store.codec.raw") is None
    assert db.feature_codec("packed") == "shuffle-zlib" and db.feature_codec("none") is None
    for kind in ("raw", "packed"):
      assert _same_bits(db.features(kind)[0][:4], rows[:4])
    with pytest.raises(StoreError, match="packed features are 20 wide; refusing rows 3 wide"):
      db.put_features("packed", [4], np.zeros((1, 3)), compress=True)
  assert {len(blob) for blob in _blobs(backend, "raw").values()} == {4 * 20}
  packed = _blobs(backend, "packed")
  assert all(zlib.decompress(blob) == rows[i].view(np.uint8).reshape(-1, 4).T.tobytes()
             for i, blob in packed.items())
  with backend.open() as db:  # a later process reads the codec from the store
    assert _same_bits(db.features("packed", [3, 1])[0], rows[[3, 1]])


def test_first_writers_racing_agree_on_the_codec(backend):
  """Workers writing a new kind at once, some compressing and some not: every row is in the
  codec the kind got, whichever won (in PostgreSQL, without put_features' lock on a kind's
  first write, a second first writer failed on the kind's row in 4 runs of 4)."""
  rows = _cdf_rows(2, n=16, width=50)
  with backend.open() as db:
    db.init_space(SCHEMA, _classes(16))
  errors = []
  together = threading.Barrier(8)

  def write(k: int) -> None:
    try:
      with backend.open() as db:
        together.wait(timeout=30)  # connected: the writes start at once
        db.put_features("fisher", [2 * k, 2 * k + 1], rows[2 * k:2 * k + 2], compress=k % 2 == 0)
    except Exception as e:  # pylint: disable=broad-except  # reported below
      errors.append(e)

  threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert not errors
  with backend.open() as db:
    values, present = db.features("fisher")
    assert present.all() and _same_bits(values, rows)
    codec = db.feature_codec("fisher")
  lengths = {len(blob) for blob in _blobs(backend, "fisher").values()}
  assert (lengths == {200}) == (codec == "raw")


def test_a_damaged_compressed_row_is_reported(backend):
  with backend.open() as db:
    db.init_space(SCHEMA, _classes(5))
    db.put_features("fisher", range(5), _cdf_rows(3, n=5, width=30), compress=True)
  good = _blobs(backend, "fisher")
  damaged = [
      (good[1][:-5], "fisher feature row of class 0 is cut short"),
      (zlib.compress(np.zeros(31, np.float32).tobytes()), "decompresses to more than 120 bytes"),
      (zlib.compress(np.zeros(29, np.float32).tobytes()),
       r"decompresses to 116 bytes, expected 120 \(30 float32\)"),
      (good[4] + b"\0", "has 1 bytes after its zlib stream"),
      (b"not zlib", "does not decompress")]
  for blob, message in damaged:
    backend.sql("UPDATE features SET row = ? WHERE class_id = 0", (blob,))
    with backend.open() as db:
      with pytest.raises(StoreError, match=message):
        db.features("fisher", [2, 0])
      with pytest.raises(StoreError, match=message):
        db.features("fisher")
      assert db.features("fisher", [1, 2])[1].all()  # the intact rows still read


# -- format versions ----------------------------------------------------------------------------

# The SQLite tables of format versions 1 and 2, as those versions wrote them.
_V2_TABLES = {
    "meta": "key TEXT PRIMARY KEY, value TEXT NOT NULL",
    "classes": "class_id INTEGER PRIMARY KEY, name TEXT NOT NULL",
    "functions": "name TEXT PRIMARY KEY, class_id INTEGER NOT NULL, position INTEGER NOT NULL",
    "feature_kinds": "kind TEXT PRIMARY KEY, width INTEGER NOT NULL",
    "features": "kind TEXT NOT NULL, class_id INTEGER NOT NULL, row BLOB NOT NULL, "
                "PRIMARY KEY (kind, class_id)",
    "evaluations": "seq INTEGER PRIMARY KEY AUTOINCREMENT, class_id INTEGER NOT NULL UNIQUE, "
                   "status TEXT NOT NULL, metrics TEXT NOT NULL, per_seed TEXT NOT NULL, "
                   "runtime_s REAL NOT NULL, worker TEXT NOT NULL, finished_at REAL NOT NULL",
    "claims": "task TEXT NOT NULL, class_id INTEGER NOT NULL, worker TEXT NOT NULL, "
              "expires_at REAL NOT NULL, PRIMARY KEY (task, class_id)",
}
_V1_TABLES = {**_V2_TABLES, "claims": "class_id INTEGER PRIMARY KEY, worker TEXT NOT NULL, "
                                      "expires_at REAL NOT NULL"}


def _old_sqlite_store(path: str, version: int, rows: np.ndarray) -> None:
  """A store file as actbench of format `version` left it: a space of len(rows) classes, raw
  'fisher' rows, a claim."""
  classes = _classes(len(rows))
  db = sqlite3.connect(path)
  with db:
    for name, columns in (_V1_TABLES if version == 1 else _V2_TABLES).items():
      db.execute(f"CREATE TABLE {name} ({columns})")
    db.execute(f"PRAGMA application_id={store_lib.APPLICATION_ID}")
    db.execute(f"PRAGMA user_version={version}")
    db.executemany("INSERT INTO meta VALUES (?, ?)", [
        ("store.format", "actbench search store"), ("store.version", str(version)),
        ("store.space_schema", SCHEMA),
        ("store.space_digest", store_lib.space_digest(SCHEMA, classes)),
        ("store.space_classes", str(len(classes)))])
    db.executemany("INSERT INTO classes VALUES (?, ?)",
                   [(i, members[0]) for i, members in enumerate(classes)])
    db.executemany("INSERT INTO functions VALUES (?, ?, ?)",
                   [(name, i, p) for i, members in enumerate(classes)
                    for p, name in enumerate(members)])
    db.execute("INSERT INTO feature_kinds VALUES ('fisher', ?)", (rows.shape[1],))
    db.executemany("INSERT INTO features VALUES ('fisher', ?, ?)",
                   [(i, row.astype("<f4").tobytes()) for i, row in enumerate(rows)])
    claim = (4, "w", 1e12) if version == 1 else ("train", 4, "w", 1e12)
    db.execute(f"INSERT INTO claims VALUES ({', '.join('?' * len(claim))})", claim)
  db.close()


@pytest.mark.parametrize("version", [1, 2, 3])
def test_an_older_sqlite_store_is_upgraded_and_its_raw_rows_read(tmp_path, version):
  path = str(tmp_path / "old.db")
  rows = _cdf_rows(4, n=8, width=24)
  _old_sqlite_store(path, version, rows)
  with store_lib.Store(path) as db:
    db.init_space(SCHEMA, _classes(8))  # the same space: resumed
    assert db.get_meta("store.version") == str(store_lib.FORMAT_VERSION) == "4"
    assert db.feature_codec("fisher") == "raw"
    assert _same_bits(db.features("fisher")[0], rows)
    assert _same_bits(db.features("fisher", [6, 2])[0], rows[[6, 2]])
    assert db.claimed_ids() == {4: "w"}
    db.put_features("fisher", [1], rows[[1]] + 1, compress=True)  # the kind stays raw
    db.put_features("new", [1], rows[[1]], compress=True)  # a new kind may be compressed
  check = sqlite3.connect(path)
  assert check.execute("PRAGMA user_version").fetchone()[0] == 4
  assert check.execute("SELECT length(row) FROM features WHERE kind = 'fisher' AND class_id = 1"
                       ).fetchone()[0] == 4 * 24
  check.close()
  with store_lib.Store(path) as db:
    assert _same_bits(db.features("fisher", [1])[0][0], rows[1] + 1)
    assert db.feature_codec("new") == "shuffle-zlib"


def test_a_newer_sqlite_store_is_refused(tmp_path):
  path = tmp_path / "new.db"
  _old_sqlite_store(str(path), 2, _cdf_rows(5, n=2, width=12))
  db = sqlite3.connect(path)
  db.execute("PRAGMA user_version=5")
  db.close()
  content = path.read_bytes()
  with pytest.raises(StoreError, match="format version 5; this actbench reads version 4: "
                                       "upgrade actbench"):
    store_lib.Store(str(path))
  assert path.read_bytes() == content


@pytest.mark.parametrize("version", [2, 3])
def test_a_postgresql_store_of_an_older_version_is_upgraded_and_5_refused(tmp_path, postgres_url,
                                                                          version):
  backend = _Postgres(tmp_path, postgres_url)
  rows = _cdf_rows(6, n=5, width=12)
  with backend.open() as db:
    db.init_space(SCHEMA, _classes(5))
    db.put_features("fisher", range(5), rows)
  backend.sql(f"UPDATE meta SET value = '{version}' WHERE key = 'store.version'")  # as it left it
  with backend.open() as db:
    assert db.get_meta("store.version") == "4"
    assert _same_bits(db.features("fisher")[0], rows)
    assert db.feature_codec("fisher") == "raw"
  backend.sql("UPDATE meta SET value = '5' WHERE key = 'store.version'")
  with pytest.raises(StoreError, match="format version 5; this actbench reads version 4: "
                                       "upgrade actbench"):
    backend.open()
  assert backend.sql("SELECT value FROM meta WHERE key = 'store.version'") == [("5",)]


def test_the_codec_round_trips_any_float32_bits():
  """Every bit pattern, not only those a search makes: random words, NaNs among them."""
  words = np.random.default_rng(7).integers(0, 2**32, size=(64, 33), dtype=np.uint32)
  rows = words.view(np.float32)
  for codec in store_base.CODECS:
    blobs = store_base.encode_rows(rows, codec)
    back = np.stack([store_base.decode_row(blob, codec, 33) for blob in blobs])
    assert _same_bits(back, rows)
  empty = store_base.encode_rows(np.zeros((1, 0), np.float32), "shuffle-zlib")
  assert store_base.decode_row(empty[0], "shuffle-zlib", 0).shape == (0,)
  with pytest.raises(ValueError, match="unknown"):
    store_base.decode_row(b"", "lz4", 0)
