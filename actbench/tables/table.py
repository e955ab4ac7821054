"""Act-Bench tables: the published benchmark format, read and written as a stream.

A benchmark file is one JSON object (METHOD.md section 5), about 130 MB for the published ones:

    {fn_name: {"Train Accuracy": ..., ..., "Runtime (s)": ...,
               "Equivalent Activation Functions": [names],
               "Fisher log eigenvalue CDF": [floats],
               "Validation Accuracy Curve": [floats], ...}, ...}

The learning curves (CURVE_KEYS: a value per epoch, 1 first) are actbench's addition: the
published tables have none, and a table without them reads as before.

`read` parses it entry by entry from a sliding text buffer, so that memory holds the columns
(mostly the float32 Fisher matrix) and one entry's text, never the whole file or its tree of
Python objects. `write` streams the same format back, NaN written as bare NaN as Python's json
does. Both take .json or gzipped files.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import gzip
import hashlib
import json
import math
import os
import re
import warnings
import zlib
from collections.abc import Sequence

import numpy as np
import tqdm

from actbench import errors

METRIC_KEYS = ("Train Accuracy", "Validation Accuracy", "Test Accuracy", "Train Loss",
               "Validation Loss", "Test Loss", "Runtime (s)")
EQUIVALENTS_KEY = "Equivalent Activation Functions"
FISHER_KEY = "Fisher log eigenvalue CDF"
# Learning curves, a list per entry: the value after each epoch (null or NaN where none).
CURVE_KEYS = ("Train Accuracy Curve", "Validation Accuracy Curve", "Train Loss Curve",
              "Validation Loss Curve")

_SPLITS = {"train": "Train", "validation": "Validation", "val": "Validation", "test": "Test"}
_CHUNK_BYTES = 1 << 20
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()  # accepts NaN, Infinity and -Infinity, as Python writes them
# Fisher rows are gathered in blocks of about this many bytes and joined once at the end, so
# that peak memory is the matrix plus one block (a growing array would copy itself).
_BLOCK_BYTES = 8 << 20


class BenchmarkError(errors.InputError, ValueError):
  """A benchmark file or table that is not in the Act-Bench format."""


def _squash(name: str) -> str:
  return "".join(name.split())  # the expression grammar ignores whitespace


@dataclasses.dataclass(eq=False, repr=False)
class Table:
  """One benchmark: an entry per equivalence class, in file order, as columns.

  Attributes:
    names: the entries' function names (each a class's representative).
    equivalents: each entry's "Equivalent Activation Functions", as given.
    metrics: float64 (n,) per numeric key present in any entry (the METRIC_KEYS first, then
      extra numeric keys such as "Diverged"); NaN where an entry lacks it or has null.
    fisher: float32 (n, d) "Fisher log eigenvalue CDF"; NaN rows for entries without one,
      (n, 0) when no entry has one.
    curves: float64 (n, epochs) per CURVE_KEYS key present in any entry, in CURVE_KEYS order
      (read them with `curve`); epochs is the longest entry's, and an entry without the curve,
      or with a shorter one, is NaN-padded. {} when no entry has curves (published tables).
  """
  names: list[str]
  equivalents: list[list[str]]
  metrics: dict[str, np.ndarray]
  fisher: np.ndarray
  curves: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  _lookup: dict[str, int] | None = dataclasses.field(default=None, init=False)

  def __post_init__(self):
    n = len(self.names)
    self.names = list(self.names)
    self.equivalents = [list(names) for names in self.equivalents]
    self.metrics = {key: np.asarray(column, np.float64) for key, column in self.metrics.items()}
    self.fisher = np.asarray(self.fisher, np.float32)
    if self.fisher.size == 0 and self.fisher.ndim < 2:
      self.fisher = self.fisher.reshape(n, 0)
    unknown = [key for key in self.curves if key not in CURVE_KEYS]
    if unknown:  # `write` would write them and `read` ignore them: refused here instead
      raise BenchmarkError(f"unknown curve keys {unknown}; curves are {list(CURVE_KEYS)}")
    self.curves = {key: np.asarray(self.curves[key], np.float64) for key in CURVE_KEYS
                   if key in self.curves}
    shapes = [len(self.equivalents), self.fisher.shape[0]] + [
        column.shape for column in self.metrics.values()]
    if (any(shape not in (n, (n,)) for shape in shapes) or self.fisher.ndim != 2
        or any(curve.ndim != 2 or len(curve) != n for curve in self.curves.values())):
      raise BenchmarkError(f"inconsistent table columns for {n} names: equivalents "
                           f"{len(self.equivalents)}, fisher {self.fisher.shape}, metrics "
                           f"{ {key: column.shape for key, column in self.metrics.items()} }, "
                           f"curves { {key: curve.shape for key, curve in self.curves.items()} }")

  def __len__(self) -> int:
    return len(self.names)

  def __repr__(self) -> str:
    curves = ""
    if self.curves:  # epochs per curve
      curves = f", curves={ {key: curve.shape[1] for key, curve in self.curves.items()} }"
    return (f"Table({len(self)} entries, metrics={list(self.metrics)}, "
            f"fisher={self.fisher.shape}{curves})")

  def index(self, name: str) -> int:
    """The entry of a function, found by its name or any of its equivalents' names."""
    if self._lookup is None:
      lookup = {}
      for i, entry in enumerate(self.names):
        lookup.setdefault(_squash(entry), i)  # an entry's own name wins over equivalents
      for i, others in enumerate(self.equivalents):
        for other in others:
          lookup.setdefault(_squash(other), i)
      self._lookup = lookup
    try:
      return self._lookup[_squash(name)]
    except KeyError:
      close = difflib.get_close_matches(_squash(name), list(self._lookup), n=3)
      hint = f"; close matches: {', '.join(close)}" if close else ""
      raise KeyError(f"{name!r} is not in this table of {len(self)} entries{hint}") from None

  def accuracy(self, split: str = "Validation") -> np.ndarray:
    """The (n,) accuracies of a split: 'train', 'validation' (or 'val') or 'test'."""
    key = f"{_SPLITS.get(split.lower(), split)} Accuracy"
    if key not in self.metrics:
      raise KeyError(f"no {key!r} column; the table has {list(self.metrics)}")
    return self.metrics[key]

  def curve(self, split: str = "validation", metric: str = "accuracy") -> np.ndarray:
    """The (n, epochs) learning curves of a split ('train', 'validation' or 'val') and a
    metric ('accuracy' or 'loss'): each entry's value after each epoch, NaN-padded."""
    key = f"{_SPLITS.get(split.lower(), split)} {metric.capitalize()} Curve"
    if key not in self.curves:
      have = f"its curves are {list(self.curves)}" if self.curves else "it has no curves"
      raise KeyError(f"no {key!r} in this table of {len(self)} entries; {have}")
    return self.curves[key]

  def subset(self, indices) -> Table:
    """The entries at `indices` (integers or a boolean mask), in that order."""
    indices = np.asarray(indices)
    if indices.dtype == bool:
      indices = np.flatnonzero(indices)
    indices = indices.astype(np.int64).reshape(-1)
    return Table([self.names[i] for i in indices], [self.equivalents[i] for i in indices],
                 {key: column[indices] for key, column in self.metrics.items()},
                 self.fisher[indices], {key: curve[indices] for key, curve in self.curves.items()})

  def classes(self) -> list[list[str]]:
    """Each entry's class: its name, then its equivalents without repeats."""
    return [list(dict.fromkeys([name, *others])) for name, others in
            zip(self.names, self.equivalents)]


class _Tap:
  """A binary file whose reads also feed a digest and a progress bar."""

  def __init__(self, raw, digest, bar):
    self.raw, self.digest, self.bar = raw, digest, bar

  def read(self, size: int = -1) -> bytes:
    data = self.raw.read(size)
    self.digest.update(data)
    self.bar.update(len(data))
    return data


class _Source:
  """A file's text as a sliding buffer, parsed one top-level entry at a time.

  `text[pos:]` is what is left to parse; `base` counts the characters dropped before `text`.
  """

  def __init__(self, path: str, chunk_bytes: int, progress: bool, digest):
    self.path = path
    self._raw = open(path, "rb")
    self._bar = tqdm.tqdm(total=os.fstat(self._raw.fileno()).st_size, unit="B",
                          unit_scale=True, unit_divisor=1024, desc=os.path.basename(path),
                          disable=not progress)
    gzipped = self._raw.read(2) == b"\x1f\x8b"  # by content, whatever the name says
    self._raw.seek(0)
    tap = _Tap(self._raw, digest, self._bar)
    self._bytes = gzip.GzipFile(fileobj=tap, mode="rb") if gzipped else tap
    self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
    self._chunk = max(1, chunk_bytes)
    self.text, self.pos, self.base, self.eof = "", 0, 0, False

  def __enter__(self) -> _Source:
    return self

  def __exit__(self, *exc_info):
    self._bar.close()
    self._raw.close()

  @property
  def offset(self) -> int:
    return self.base + self.pos

  def _fail(self, what: str, offset: int | None = None):
    offset = self.offset if offset is None else offset
    raise BenchmarkError(f"{self.path}: {what} (character {offset})")

  def _fill(self, min_chars: int) -> bool:
    """Drops the parsed text and appends at least `min_chars` characters, fewer at the end of
    the file; whether any were appended."""
    self.text, self.base, self.pos = self.text[self.pos:], self.base + self.pos, 0
    pieces, added = [], 0
    while added < min_chars and not self.eof:
      try:
        data = self._bytes.read(self._chunk)
        pieces.append(self._decoder.decode(data, final=not data))
      except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        self._fail(f"not a readable gzip file ({e})", self.base + len(self.text) + added)
      except UnicodeDecodeError as e:
        self._fail(f"not UTF-8 text ({e.reason})", self.base + len(self.text) + added)
      self.eof = not data
      added += len(pieces[-1])
    self.text += "".join(pieces)
    return added > 0

  def _peek(self) -> str:
    """Skips whitespace; the next character, '' at the end of the file."""
    while True:
      self.pos = _WHITESPACE.match(self.text, self.pos).end()
      if self.pos < len(self.text):
        return self.text[self.pos]
      if not self._fill(1):
        return ""

  def _value(self, closer: str, where: str):
    """Decodes the JSON value at `pos`, reading on while its text is incomplete."""
    while True:
      if not self.eof and self.text.find(closer, self.pos + 1) < 0:
        self._fill(max(self._chunk, len(self.text) - self.pos))  # cannot be complete yet
        continue
      try:
        value, end = _DECODER.raw_decode(self.text, self.pos)
      except json.JSONDecodeError as e:
        # A value cut by the end of the buffer fails at its end, or as an open string.
        cut = e.pos >= len(self.text) - 16 or e.msg.startswith("Unterminated string")
        if self.eof or not cut:
          self._fail(f"{where}: {'the file ends inside it' if cut else e.msg}", self.base + e.pos)
        # At least doubling the unparsed text keeps retries linear in the entry's length.
        self._fill(max(self._chunk, len(self.text) - self.pos))
        continue
      self.pos = end
      return value

  def entries(self):
    """Yields (name, value, character offset of the value) per top-level member."""
    first = self._peek()
    if first != "{":
      self._fail("the top level is not a JSON object" +
                 (f" (it starts with {first!r})" if first else ": the file is empty"))
    self.pos += 1
    after = "after the opening brace"
    if self._peek() == "}":
      self.pos += 1
    else:
      while True:
        if self._peek() != '"':
          self._fail(f"expected an entry name {after}" if self._peek() else
                     f"truncated: the file ends {after}")
        name = self._value('"', f"the name {after}")
        after = f"after entry {name!r}"
        if self._peek() != ":":
          self._fail(f"expected ':' after the name {name!r}")
        self.pos += 1
        self._peek()
        offset = self.offset
        yield name, self._value("}", f"entry {name!r}"), offset
        separator = self._peek()
        if separator != ",":
          if separator != "}":
            self._fail(f"expected ',' or '}}' {after}" if separator else
                       f"truncated: the file ends {after}")
          self.pos += 1
          break
        self.pos += 1
    if self._peek():
      self._fail("extra data after the top-level object")


class _Builder:
  """Columns gathered entry by entry, with the checks that need the entries seen so far."""

  def __init__(self, path: str):
    self.path = path
    self.names: list[str] = []
    self.seen: set[str] = set()
    self.equivalents: list[list[str]] = []
    self.metrics: dict[str, list[float]] = {}
    self.width: int | None = None  # the Fisher CDF length, set by the first entry with one
    self.blocks: list[np.ndarray] = []
    self.filled = 0  # rows used in the last block
    # Per curve key, each entry's values (None without): padded to one width at the end.
    self.curves: dict[str, list[np.ndarray | None]] = {}
    self.ignored: dict[str, int] = {}

  def _fail(self, name: str, offset: int, what: str):
    raise BenchmarkError(f"{self.path}: entry {name!r} (character {offset}): {what}")

  def add(self, name: str, entry, offset: int):
    if not isinstance(entry, dict):
      self._fail(name, offset, f"is a {type(entry).__name__}, expected an object")
    if name in self.seen:
      self._fail(name, offset, "appears twice")
    row, equivalents, fisher, curves = {}, [], None, {}
    for key, value in entry.items():
      if key == EQUIVALENTS_KEY:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
          self._fail(name, offset, f"{EQUIVALENTS_KEY!r} is not a list of strings")
        equivalents = value
      elif key == FISHER_KEY:
        fisher = self._fisher_row(name, offset, value)
      elif key in CURVE_KEYS:
        curves[key] = self._curve(name, offset, key, value)
      elif value is None or isinstance(value, (int, float)):  # bools too: 1.0 and 0.0
        row[key] = math.nan if value is None else float(value)
      elif key in METRIC_KEYS:
        self._fail(name, offset, f"{key!r} is a {type(value).__name__}, expected a number")
      else:
        self.ignored[key] = self.ignored.get(key, 0) + 1
    n = len(self.names)
    for key in row.keys() - self.metrics.keys():
      self.metrics[key] = [math.nan] * n  # a column that appears late is NaN before
    for key, column in self.metrics.items():
      column.append(row.get(key, math.nan))
    for key in curves.keys() - self.curves.keys():
      self.curves[key] = [None] * n
    for key, rows in self.curves.items():
      rows.append(curves.get(key))
    self._append_fisher(fisher)
    self.names.append(name)
    self.seen.add(name)
    self.equivalents.append(equivalents)

  def _fisher_row(self, name: str, offset: int, value) -> np.ndarray:
    try:
      row = np.asarray(value, np.float32)  # null becomes NaN
    except (TypeError, ValueError) as e:
      self._fail(name, offset, f"{FISHER_KEY!r} is not a list of numbers ({e})")
    if row.ndim != 1:
      self._fail(name, offset, f"{FISHER_KEY!r} is not a flat list of numbers")
    if self.width is None:
      self.width = row.size
    elif row.size != self.width:
      self._fail(name, offset, f"{FISHER_KEY!r} has {row.size} values, the entries before it "
                 f"{self.width}")
    return row

  def _curve(self, name: str, offset: int, key: str, value) -> np.ndarray:
    """One entry's learning curve: a flat list of numbers, null for a missing value. Checked
    value by value (np.asarray would take "0.5" for a number)."""
    if not isinstance(value, list):
      self._fail(name, offset, f"{key!r} is {_kind(value)}, expected a list of numbers")
    for epoch, point in enumerate(value):
      if point is not None and not isinstance(point, (int, float)):
        self._fail(name, offset, f"{key!r} is not a flat list of numbers: value {epoch} is "
                   f"{_kind(point)}")
    try:
      return np.array([math.nan if point is None else point for point in value], np.float64)
    except OverflowError:
      self._fail(name, offset, f"{key!r} has a number too large for a float")

  def _append_fisher(self, row: np.ndarray | None):
    if self.width is None:
      return  # rows before the first CDF are filled with NaN at the end
    if not self.blocks or self.filled == len(self.blocks[-1]):
      rows = max(1, _BLOCK_BYTES // max(1, 4 * self.width))
      self.blocks.append(np.empty((rows, self.width), np.float32))
      self.filled = 0
      if len(self.blocks) == 1:
        self.filled = len(self.names)  # earlier entries had no CDF
        if self.filled > rows:
          self.blocks[0] = np.empty((self.filled + rows, self.width), np.float32)
        self.blocks[0][:self.filled] = np.nan
    self.blocks[-1][self.filled] = np.nan if row is None else row
    self.filled += 1

  def table(self) -> Table:
    if self.ignored:
      warnings.warn(f"{self.path}: ignored non-numeric keys (key: entries) {self.ignored}",
                    stacklevel=3)
    n = len(self.names)
    fisher = np.empty((n, self.width or 0), np.float32)
    start = 0
    while self.blocks:  # join block by block, freeing each as it is copied
      block = self.blocks.pop(0)
      rows = self.filled if not self.blocks else len(block)
      fisher[start:start + rows] = block[:rows]
      start += rows
    ordered = [key for key in METRIC_KEYS if key in self.metrics]
    ordered += [key for key in self.metrics if key not in METRIC_KEYS]
    return Table(self.names, self.equivalents,
                 {key: np.array(self.metrics[key], np.float64) for key in ordered}, fisher,
                 {key: _padded(rows) for key, rows in self.curves.items()})


def _kind(value) -> str:
  """What a decoded JSON value is, in JSON's words."""
  kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
           type(None): "null"}
  return kinds.get(type(value), "a number")


def _padded(rows: list[np.ndarray | None]) -> np.ndarray:
  """(n, the longest row's length), each row NaN-padded; NaN rows for None."""
  curve = np.full((len(rows), max((len(row) for row in rows if row is not None), default=0)),
                  np.nan)
  for i, row in enumerate(rows):
    if row is not None:
      curve[i, :len(row)] = row
  return curve


def read_hashed(path, *, progress: bool = False,
                _chunk_size: int = _CHUNK_BYTES) -> tuple[Table, str]:
  """`read`, and the sha256 of the file's bytes (as stored, gzipped or not)."""
  path = os.fspath(path)
  digest = hashlib.sha256()
  builder = _Builder(path)
  with _Source(path, _chunk_size, progress, digest) as source:
    for name, entry, offset in source.entries():
      builder.add(name, entry, offset)
  return builder.table(), digest.hexdigest()


def read(path, *, progress: bool = False, _chunk_size: int = _CHUNK_BYTES) -> Table:
  """Reads an Act-Bench JSON file (.json or gzipped), streaming, entry by entry.

  Memory is the columns plus about one entry's text: the file is never held whole.

  Args:
    path: the file.
    progress: show a tqdm bar over the bytes read.
    _chunk_size: bytes read at a time (tests make it tiny).

  Raises:
    BenchmarkError: the file is not in the format; the message names the path, the entry and
      its character offset, and what is wrong.
  """
  return read_hashed(path, progress=progress, _chunk_size=_chunk_size)[0]


def _entry(table: Table, i: int, columns: Sequence[tuple[str, list]]) -> dict:
  entry = {key: values[i] for key, values in columns}
  entry[EQUIVALENTS_KEY] = table.equivalents[i]
  row = table.fisher[i]
  if row.size and not np.isnan(row).all():  # an all-NaN row was an absent CDF
    entry[FISHER_KEY] = row.tolist()
  for key, curve in table.curves.items():
    if not np.isnan(curve[i]).all():  # an all-NaN row was an absent curve
      entry[key] = curve[i].tolist()  # the table's full width: trailing NaN kept
  return entry


def write(table: Table, path) -> None:
  """Writes a table in the Act-Bench format, entry by entry; gzipped if the path ends in .gz.

  The file appears whole or not at all (written to a temporary file, then renamed). Metrics are
  written for every entry (NaN where missing); an all-NaN Fisher row is written as no CDF, an
  all-NaN curve row as no curve. Curves are written at the table's full width, NaN padding
  kept (a shorter list would read back the same, but only while some entry is longer: a table
  whose every entry ends in NaN would lose epochs), so that a written table reads back to the
  same arrays.
  """
  path = os.fspath(path)
  tmp = f"{path}.tmp-{os.getpid()}"
  columns = [(key, column.tolist()) for key, column in table.metrics.items()]
  try:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(tmp, "wt", encoding="utf-8") as f:
      f.write("{")
      for i, name in enumerate(table.names):
        f.write(f"{',' if i else ''}\n{json.dumps(name)}: "
                f"{json.dumps(_entry(table, i, columns), allow_nan=True)}")
      f.write("\n}\n")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
