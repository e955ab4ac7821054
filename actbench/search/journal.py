"""An append-only journal of evaluations beside the store: no result is lost with the store file.

Every evaluation the store records is first appended here as one JSON line and fsynced, inside
the store's write transaction, so the journal's order is the store's. A damaged store file is
rebuilt from it (`--config.mode=recover`, recovery.py), and a process killed between the two
writes leaves a line that the next run replays into the store (`Store.replay_journal`).

A line holds the class's representative name beside its id, and the recipe fingerprint of
the store: a rebuilt space that numbers its classes differently, or a config of another
recipe, is detected instead of mislabelling or mixing results. A torn last line (a crash
mid-write) and any unreadable line are skipped on reading.
"""

from __future__ import annotations

import json
import os
from typing import Any

SUFFIX = ".evaluations.jsonl"


def path_of(store_path: str) -> str:
  """The journal of the store at `store_path`: search.sqlite -> search.evaluations.jsonl."""
  return os.path.splitext(os.fspath(store_path))[0] + SUFFIX


def append(path: str, record: dict[str, Any]) -> None:
  """Appends one record as a JSON line and waits until it is on disk."""
  line = json.dumps(record, sort_keys=True, allow_nan=False) + "\n"
  # O_APPEND: concurrent writers (serialized by the store's lock anyway) never interleave.
  fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  try:
    os.write(fd, line.encode("utf-8"))
    os.fsync(fd)
  finally:
    os.close(fd)


def read(path: str) -> list[dict[str, Any]]:
  """Every well-formed record, in the order appended ([] when there is no journal)."""
  if not os.path.exists(path):
    return []
  records = []
  with open(path, "rb") as f:
    for raw in f:
      try:
        record = json.loads(raw.decode("utf-8"))
      except (UnicodeDecodeError, ValueError):
        continue  # torn or damaged line
      if isinstance(record, dict) and isinstance(record.get("class_id"), int):
        records.append(record)
  return records
