"""A damaged search store rebuilt: every evaluation from the journal, the rest salvaged.

`--config.mode=recover` on a workdir whose search.sqlite is refused as damaged (truncated,
overwritten): the damaged files are moved aside (`search.sqlite.damaged-<time>`), a fresh store
is made for the config's space, and it gets every evaluation of the journal (journal.py) plus
whatever the damaged file still yields page by page: its meta records, feature rows and
evaluations (those the journal lacks, e.g. when the journal was lost too). Features that cannot
be read are simply computed again by the next search run.

Results are never mixed. The damaged file's own space, recipe, data and model (its salvaged
meta) must be the config's, else the rebuild is refused and nothing is touched: the config is
the wrong one. Journal lines of another search (a store deleted and started again in the same
workdir) are skipped and counted: each line carries the fingerprints of its store, and a row
of the file carries the file's. A file that is foreign, of a newer format version or merely
locked is not damaged: it is refused, never moved aside.

    report = recovery.rebuild(path, schema, classes, recipe=..., data=..., model=...)
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sqlite3
import struct
import tempfile
import time
import zlib

from absl import logging
import numpy as np

from actbench.search import journal, store_base
from actbench.search.store import (FINGERPRINTS, DamagedStoreError, Evaluation, Store,
                                   StoreError, evaluation_from_record, space_digest)

# Why a journal line or salvaged row was left out, as counted in rebuild's report['skipped']:
# of another recipe, data or model; with no fingerprint at all; of another space than the
# store's; a row whose class id nothing confirms; a record that is not an evaluation.
SKIP_REASONS = FINGERPRINTS + ("unattributed", "space", "unnamed", "unreadable")

_SIDE_FILES = ("", "-wal", "-shm")  # SQLite's database file and its WAL companions
_OTHER = {"recipe": "of another training recipe", "data": "computed on other data",
          "model": "computed with another model"}


@dataclasses.dataclass
class Salvage:
  """What could be read from a damaged store file."""
  meta: dict[str, str] = dataclasses.field(default_factory=dict)
  names: dict[int, str] = dataclasses.field(default_factory=dict)  # class id -> representative
  features: dict[str, dict[int, bytes]] = dataclasses.field(default_factory=dict)
  widths: dict[str, int] = dataclasses.field(default_factory=dict)  # kind -> its rows' width
  # Journal-style records; 'name' is None where the classes table did not yield it.
  evaluations: list[dict] = dataclasses.field(default_factory=list)


def _rows(db: sqlite3.Connection, sql: str):
  """The rows of a query, as dicts by column, until the first damaged page (what precedes it
  is kept)."""
  try:
    cursor = db.execute(sql)
    columns = [d[0] for d in cursor.description]
    for row in cursor:
      yield dict(zip(columns, row))
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
    found.meta = {row["key"]: row["value"] for row in _rows(db, "SELECT key, value FROM meta")}
    found.names = {row["class_id"]: row["name"]
                   for row in _rows(db, "SELECT class_id, name FROM classes")}
    found.widths = {row["kind"]: row["width"]
                    for row in _rows(db, "SELECT kind, width FROM feature_kinds")}
    for row in _rows(db, "SELECT kind, class_id, row FROM features"):
      found.features.setdefault(row["kind"], {})[row["class_id"]] = bytes(row["row"])
    # SELECT *: a later format's columns (fingerprints of the row, say) come along by name.
    for record in _rows(db, "SELECT * FROM evaluations ORDER BY seq"):
      record.pop("seq", None)
      record["name"] = found.names.get(record.get("class_id"))
      found.evaluations.append(record)
  except sqlite3.Error:  # not even the schema: nothing to read
    pass


def _decode_salvaged(blobs: dict[int, bytes], codec: str | None,
                     width: int | None) -> dict[int, np.ndarray]:
  """The salvaged rows of one kind that decode, by class id; none unless all agree on a width.

  The kind's codec (its meta key) and width (feature_kinds) may be lost with their pages: a
  row that inflates to whole float32 under 'shuffle-zlib' is compressed (zlib's checksum
  vouches for it), else it is raw; the width is then the row's own."""
  decoded = {}
  for class_id, blob in blobs.items():
    for guess in [codec] if codec else [store_base.SHUFFLE_ZLIB, store_base.RAW]:
      try:
        size = len(blob) if guess == store_base.RAW else len(zlib.decompress(blob))
        decoded[class_id] = store_base.decode_row(
            blob, guess, width if width is not None else size // 4)
        break
      except (ValueError, zlib.error):
        continue
  if len({len(row) for row in decoded.values()}) != 1:
    return {}
  return decoded


def _move_aside(path: str) -> str | None:
  """Renames the damaged database (and its WAL files); returns the new name (None when there
  was no database file)."""
  if not os.path.exists(path):
    return None
  aside = f"{path}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
  for suffix in _SIDE_FILES:
    if os.path.exists(path + suffix):
      os.replace(path + suffix, aside + suffix)
  return aside


def _refuse_unless_damaged(path: str) -> None:
  """Raises StoreError, touching nothing, unless the file is missing (the journal alone is
  rebuilt) or refused as damaged: a foreign file, a newer format version or a lock held by
  another process is no reason to move a file aside."""
  if not os.path.exists(path):
    return
  try:
    with Store(path):
      pass
  except DamagedStoreError:
    return
  except StoreError as e:
    raise StoreError(f"not rebuilding {path}: it is not a damaged store, and was left as it "
                     f"was: {e}") from e
  raise StoreError(f"not rebuilding {path}: it is intact (--config.mode=recover only replays "
                   "its journal into an intact store)")


def _fingerprint(record: dict, fallback: dict[str, str] | None = None) -> dict[str, str | None]:
  fallback = fallback or {}
  return {key: record.get(key) if record.get(key) is not None else fallback.get(key)
          for key in FINGERPRINTS}


def _why_not_ours(fingerprint: dict, target: dict) -> str | None:
  """None when a record of this fingerprint is of the search `target` describes, else the
  skip reason. A key either side lacks is no evidence (a line older than the data and model
  records); a record lacking every key cannot be attributed, unless the search has no
  fingerprint either (then nothing tells two searches apart, and nothing is thrown away)."""
  if all(value is None for value in fingerprint.values()):
    return "unattributed" if any(value is not None for value in target.values()) else None
  for key in FINGERPRINTS:
    if None not in (fingerprint[key], target[key]) and fingerprint[key] != target[key]:
      return key
  return None


def _target(path: str, given: dict, meta: dict, lines: list[dict]) -> dict:
  """The fingerprints of the search rebuilt: the caller's, else the damaged file's own, else
  the one value the journal's lines of this search agree on."""
  for key, value in given.items():
    theirs = meta.get(key)
    if None not in (value, theirs) and value != theirs:
      # The file is the workdir's store: a config of another search is the wrong config.
      raise StoreError(f"{path} holds results {_OTHER[key]} than this config's (its {key} "
                       f"{theirs!r}, this config's {value!r}): recover with the config the "
                       "search was run with; nothing was moved")
  target = {key: given[key] if given[key] is not None else meta.get(key)
            for key in FINGERPRINTS}
  for key in FINGERPRINTS:
    if target[key] is not None:
      continue
    values = {_fingerprint(line)[key] for line in lines
              if _why_not_ours(_fingerprint(line), target) is None} - {None}
    if len(values) > 1:
      raise StoreError(f"{journal.path_of(path)} holds results of {len(values)} different "
                       f"{key} fingerprints, and neither {path} nor the caller says which is "
                       f"this search's: pass {key}= to rebuild; nothing was moved")
    target[key] = next(iter(values), None)
  return target


def _space_refusal(path: str, class_id, name, names: list[str]) -> StoreError:
  here = names[class_id] if isinstance(class_id, int) and 0 <= class_id < len(names) else None
  return StoreError(f"{path} and its journal hold another search space than this config's "
                    f"(class {class_id} is {name!r} there but {here or 'absent'!r} here): "
                    "recover with the config the search was run with; nothing was moved")


def rebuild(path: str, schema: str, classes: list[list[str]], *, recipe: str | None = None,
            data: str | None = None, model: str | None = None) -> dict:
  """Replaces the damaged store at `path` by a fresh one for the space (schema, classes),
  with every evaluation of its journal and what the damaged file still holds, of this search
  only.

  Args:
    path: the store file (missing: rebuilt from the journal alone).
    schema, classes: the config's space, as given to `Store.init_space`.
    recipe, data, model: the search's fingerprints (the store's meta keys of these names);
      one not given is taken from the damaged file's meta, else from the journal.

  Raises:
    StoreError, touching nothing: the file is not damaged (intact, foreign, of a newer format
      version, locked); its own space, recipe, data or model differ from the config's; or
      everything found is of another search.

  Returns:
    {'moved_to', 'from_journal', 'from_file', 'features': {kind: rows}, 'meta': [keys],
     'skipped': {reason: count}} with the reasons of SKIP_REASONS.
  """
  _refuse_unless_damaged(path)
  classes = [[str(name) for name in members] for members in classes]
  names = [members[0] for members in classes]
  lines = journal.read(journal.path_of(path))
  found = salvage(path)
  file_digest = found.meta.get("store.space_digest")
  if file_digest not in (None, space_digest(schema, classes)):
    raise StoreError(f"{path} holds another search space than this config's (its space "
                     f"{found.meta.get('store.space_schema')!r} with "
                     f"{found.meta.get('store.space_classes')} classes, this config's "
                     f"{schema!r} with {len(classes)}): recover with the config the search "
                     "was run with; nothing was moved")
  ids_trusted = file_digest is not None  # the file's class ids are the config's
  target = _target(path, {"recipe": recipe, "data": data, "model": model}, found.meta, lines)
  file_fingerprint = _fingerprint(found.meta)
  skipped = dict.fromkeys(SKIP_REASONS, 0)
  kept: dict[int, tuple[str, Evaluation]] = {}  # class id -> (source, evaluation), first wins
  confirmed = set()  # class ids whose name a journal line of this search gives as the config's

  for line in lines:
    class_id = line["class_id"]
    reason = _why_not_ours(_fingerprint(line), target)
    if reason is None and not (0 <= class_id < len(names) and line.get("name") == names[class_id]):
      if not ids_trusted:  # the config's space or the journal's: nothing says which is right
        raise _space_refusal(path, class_id, line.get("name"), names)
      reason = "space"  # a line of an earlier search of another space in this workdir
    if reason is None:
      confirmed.add(class_id)
      evaluation = evaluation_from_record(line)
      if evaluation is None:
        reason = "unreadable"
      else:
        kept.setdefault(class_id, ("from_journal", evaluation))
    if reason is not None:
      skipped[reason] += 1

  for row in found.evaluations:
    class_id = row.get("class_id")
    if isinstance(class_id, int) and class_id in kept:
      continue  # the journal's copy of the same result
    reason = _why_not_ours(_fingerprint(row, found.meta), target)
    in_space = isinstance(class_id, int) and 0 <= class_id < len(names)
    if reason is None and row["name"] is not None and (not in_space
                                                       or row["name"] != names[class_id]):
      if not ids_trusted:
        raise _space_refusal(path, class_id, row["name"], names)
      reason = "space"
    elif reason is None and not in_space:
      reason = "unreadable"  # no class id of the space: a damaged row
    elif reason is None and row["name"] is None and not (ids_trusted or class_id in confirmed):
      reason = "unnamed"  # the classes table is lost, and with it what this id stood for
    evaluation = evaluation_from_record(row) if reason is None else None
    if reason is None and evaluation is None:
      reason = "unreadable"
    if reason is None:
      kept[class_id] = ("from_file", evaluation)
    else:
      skipped[reason] += 1

  if not kept and any(skipped[key] for key in FINGERPRINTS):
    others = ", ".join(f"{skipped[key]} {_OTHER[key]}" for key in FINGERPRINTS if skipped[key])
    raise StoreError(f"not rebuilding {path}: neither its journal nor the file holds an "
                     f"evaluation of this config's search ({others}): recover with the config "
                     "the search was run with; nothing was moved")
  if any(skipped.values()):
    logging.warning("rebuilding %s: left out %d journal lines or rows of the damaged file, "
                    "never mixed in (by reason: %s)", path, sum(skipped.values()),
                    ", ".join(f"{n} {reason}" for reason, n in skipped.items() if n))

  report = {"moved_to": _move_aside(path), "from_journal": 0, "from_file": 0, "features": {},
            "meta": [], "skipped": skipped}
  file_is_ours = _why_not_ours(file_fingerprint, target) is None
  with Store(path) as db:
    db.init_space(schema, classes)
    # Before any record: the rebuilt store journals the file's rows again with these.
    for key in FINGERPRINTS:
      if target[key] is not None:
        db.set_meta(key, target[key])
        report["meta"].append(key)
    if file_is_ours:
      for key, value in found.meta.items():
        if not key.startswith("store.") and key not in FINGERPRINTS:
          db.set_meta(key, value)
          report["meta"].append(key)
      for kind, rows in found.features.items():
        ids = [i for i in rows if isinstance(i, int) and 0 <= i < len(names)
               and (ids_trusted or found.names.get(i) == names[i])]
        codec = found.meta.get(f"store.codec.{kind}")
        decoded = _decode_salvaged({i: rows[i] for i in ids}, codec, found.widths.get(kind))
        if not decoded:
          continue  # unreadable or inconsistent rows: computed again by the next run
        db.put_features(kind, list(decoded), np.stack(list(decoded.values())),
                        compress=codec == store_base.SHUFFLE_ZLIB)
        report["features"][kind] = len(decoded)
    # The journal's first, in its order (the store's), then the file's own rows.
    for source, evaluation in kept.values():
      if db.record(evaluation, journaled=source == "from_journal"):
        report[source] += 1
  return report


def is_damaged(path: str) -> bool:
  """Whether the store at `path` exists and is refused as damaged (DamagedStoreError). A
  foreign file, a newer format version or a lock held too long are not: opening the store
  says what to do about those, and the file must not be moved aside."""
  if not os.path.exists(path):
    return False
  try:
    with Store(path):
      return False
  except DamagedStoreError:
    return True
  except StoreError:
    return False
