"""A damaged search store rebuilt: every evaluation from the journal, the rest salvaged.

`--config.mode=recover` on a workdir whose search.sqlite is refused (truncated, overwritten):
the damaged files are moved aside (`search.sqlite.damaged-<time>`), a fresh store is made for
the config's space, and it gets every evaluation of the journal (journal.py) plus whatever
the damaged file still yields page by page: its meta records, feature rows and evaluations
(those the journal lacks, e.g. when the journal was lost too). Features that cannot be read
are simply computed again by the next search run.

    report = recovery.rebuild(path, schema, classes)   # what was kept, from where
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sqlite3
import struct
import tempfile
import time

import numpy as np

from actbench.search import journal
from actbench.search.store import Store, StoreError, evaluation_from_record

_SIDE_FILES = ("", "-wal", "-shm")  # SQLite's database file and its WAL companions


@dataclasses.dataclass
class Salvage:
  """What could be read from a damaged store file."""
  meta: dict[str, str] = dataclasses.field(default_factory=dict)
  names: dict[int, str] = dataclasses.field(default_factory=dict)  # class id -> representative
  features: dict[str, dict[int, bytes]] = dataclasses.field(default_factory=dict)
  evaluations: list[dict] = dataclasses.field(default_factory=list)  # journal-style records


def _rows(db: sqlite3.Connection, sql: str):
  """The rows of a query until the first damaged page (what precedes it is kept)."""
  try:
    yield from db.execute(sql)
  except sqlite3.Error:
    return


def salvage(path: str) -> Salvage:
  """Reads what it can from a damaged store file, table by table; never raises on damage.

  It reads a copy (with the write-ahead log, whose commits SQLite then applies): the damaged
  file is left exactly as it was."""
  found = Salvage()
  with tempfile.TemporaryDirectory() as scratch:
    copy = os.path.join(scratch, "damaged.sqlite")
    for suffix in ("", "-wal"):
      if os.path.exists(path + suffix):
        shutil.copyfile(path + suffix, copy + suffix)
    _trust_the_file_size(copy)
    try:
      db = sqlite3.connect(copy)
    except sqlite3.Error:
      return found
    try:
      _read_into(found, db)
    finally:
      db.close()
  return found


def _trust_the_file_size(path: str) -> None:
  """Makes SQLite size a truncated database by its file, not by its header: else every query
  of the truncated file fails, intact pages too. The header's page count counts only while
  its 'version-valid-for' field equals its change counter; they are made to differ, and the
  file is cut to whole pages."""
  try:
    with open(path, "r+b") as f:
      head = f.read(100)
      if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        return
      page = struct.unpack(">H", head[16:18])[0]
      page = 65536 if page == 1 else page
      size = os.path.getsize(path)
      f.truncate(size - size % page)
      counter = struct.unpack(">I", head[24:28])[0]
      f.seek(92)
      f.write(struct.pack(">I", (counter + 1) & 0xFFFFFFFF))
  except (OSError, struct.error):
    pass


def _read_into(found: Salvage, db: sqlite3.Connection) -> None:
  try:
    # A table whose root page was cut off makes SQLite refuse the whole schema, and with it
    # the intact tables (the meta records on page 2 among them); on the scratch copy, the
    # schema is read leniently instead.
    db.execute("PRAGMA writable_schema=ON")
    found.meta = dict(_rows(db, "SELECT key, value FROM meta"))
    found.names = dict(_rows(db, "SELECT class_id, name FROM classes"))
    for kind, class_id, row in _rows(db, "SELECT kind, class_id, row FROM features"):
      found.features.setdefault(kind, {})[class_id] = bytes(row)
    columns = ("class_id", "status", "metrics", "per_seed", "runtime_s", "worker",
               "finished_at")
    for row in _rows(db, f"SELECT {', '.join(columns)} FROM evaluations ORDER BY seq"):
      record = dict(zip(columns, row))
      record["name"] = found.names.get(record["class_id"])
      found.evaluations.append(record)
  except sqlite3.Error:  # not even the schema: nothing to read
    pass


def _move_aside(path: str) -> str:
  """Renames the damaged database (and its WAL files); returns the new name."""
  aside = f"{path}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
  for suffix in _SIDE_FILES:
    if os.path.exists(path + suffix):
      os.replace(path + suffix, aside + suffix)
  return aside


def _space_problem(records: list[dict], names: list[str]) -> str | None:
  for record in records:
    class_id = record.get("class_id")
    if isinstance(class_id, int) and (not 0 <= class_id < len(names)
                                      or record.get("name") != names[class_id]):
      return (f"class {class_id} is {record.get('name')!r} there but "
              f"{names[class_id] if 0 <= class_id < len(names) else 'absent'!r} here")
  return None


def rebuild(path: str, schema: str, classes: list[list[str]], *,
            recipe: str | None = None) -> dict:
  """Replaces the damaged store at `path` by a fresh one for the space (schema, classes),
  with every evaluation of its journal and what the damaged file still holds.

  Raises StoreError, touching nothing, when the journal or the damaged file belong to another
  space or (given `recipe`, the search's recipe fingerprint) another recipe.

  Returns:
    {'moved_to', 'from_journal', 'from_file', 'features': {kind: rows}, 'meta': [keys]}.
  """
  names = [members[0] for members in classes]
  records = journal.read(journal.path_of(path))
  found = salvage(path)
  problem = _space_problem(records + found.evaluations, names)
  if problem:
    raise StoreError(f"{path} and its journal hold another search space than this config's "
                     f"({problem}): recover with the config the search was run with")
  recipes = {found.meta.get("recipe")} | {r.get("recipe") for r in records}
  if recipe is not None and recipes - {None, recipe}:
    raise StoreError(f"{path} was made with another training recipe than this config's: "
                     "recover with the config the search was run with")
  report = {"moved_to": _move_aside(path), "from_journal": 0, "from_file": 0, "features": {},
            "meta": []}
  with Store(path) as db:
    db.init_space(schema, classes)
    for key, value in found.meta.items():
      if not key.startswith("store.") and db.get_meta(key) is None:
        db.set_meta(key, value)
        report["meta"].append(key)
    if recipe is not None and db.get_meta("recipe") is None:
      # The results kept are this recipe's (checked above): the next run must not adopt
      # another config's.
      db.set_meta("recipe", recipe)
      report["meta"].append("recipe")
    for kind, rows in found.features.items():
      ids = [i for i in rows if 0 <= i < len(names) and found.names.get(i) == names[i]]
      widths = {len(rows[i]) for i in ids}
      if len(widths) != 1 or next(iter(widths)) % 4:
        continue  # unreadable or inconsistent rows: computed again by the next run
      db.put_features(kind, ids, np.stack([np.frombuffer(rows[i], "<f4") for i in ids]))
      report["features"][kind] = len(ids)
    # The journal first (it holds everything committed), then the file's own rows.
    for source, found_records in (("from_journal", records), ("from_file", found.evaluations)):
      for record in found_records:
        evaluation = evaluation_from_record(record)
        if evaluation is not None and db.record(evaluation, journaled=source == "from_journal"):
          report[source] += 1
  return report


def is_damaged(path: str) -> bool:
  """Whether the store at `path` exists and is refused as damaged or unreadable."""
  if not os.path.exists(path):
    return False
  try:
    with Store(path):
      return False
  except StoreError:
    return True
