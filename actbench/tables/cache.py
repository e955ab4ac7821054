"""Loading benchmark tables fast: a columnar .npz cache of each parsed JSON file.

Parsing a published file (about 130 MB of JSON) takes seconds; its columns, stored uncompressed
in an .npz under `<cache dir>/tables/`, load in a fraction of one (figures in `load`). A cache
entry is keyed by the source's real path, size and mtime_ns (cheap to check on every load) and
records the source's sha256. Anything that does not match, or does not load, is rebuilt from
the source and logged, never trusted. The key holds the layout's version (_FORMAT) too: a cache
written by an older reader (format 1 had no learning curves) is rebuilt, never read as a table
without curves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile

import numpy as np

from actbench.tables.download import (BENCHMARKS, check_in_place, default_cache_dir,
                                      published_path, resolve_name)
from actbench.tables.table import BenchmarkError, Table, read_hashed

# Tables built with actbench and shipped with it (configs/digits_bench.py rebuilds v2,
# configs/digits_bench_v1.py the first version).
BUNDLED = {"digits": "act-bench-digits.json.gz", "digits-v1": "act-bench-digits-v1.json.gz"}
# Bump when the cached layout or the reader's output changes. 2: learning curves (`curve_keys`
# in meta, an array `curve<i>` each), which format 1 lacked even where the source had them.
_FORMAT = 2
_log = logging.getLogger(__name__)


def _source_path(path_or_name, cache_dir: str) -> str:
  """A file that exists, else a published benchmark downloaded into the cache directory."""
  path = os.fspath(path_or_name)
  if os.path.exists(path):
    return path
  if path.removeprefix("act-bench-") in BUNDLED:
    return bundled_path(path.removeprefix("act-bench-"))
  name = resolve_name(path)
  if name is None:
    raise BenchmarkError(f"{path}: no such file, nor a published benchmark "
                         f"({', '.join(BENCHMARKS)})")
  local = published_path(name, cache_dir)
  if not os.path.exists(local):
    raise BenchmarkError(f"Act-Bench-{name.upper()} is not in {cache_dir}: run "
                         f"actbench.tables.download({name!r}) first (about 130 MB), or copy "
                         f"{BENCHMARKS[name]} to {local}")
  return check_in_place(name, cache_dir)  # still the file that was downloaded


def bundled_path(name: str) -> str:
  """The path of a table shipped inside the package (beside this module)."""
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), BUNDLED[name])


def cache_path(source: str, cache_dir: str) -> str:
  """The cache file of a source file (by its real path, so that links share one)."""
  source = os.path.realpath(source)
  stem = os.path.basename(source).removesuffix(".gz").removesuffix(".json")
  tag = hashlib.sha256(source.encode("utf-8", "surrogateescape")).hexdigest()[:12]
  return os.path.join(cache_dir, "tables", f"{stem}-{tag}.npz")


def _key(source: str) -> dict:
  stat = os.stat(source)
  return {"format": _FORMAT, "source": os.path.realpath(source), "size": stat.st_size,
          "mtime_ns": stat.st_mtime_ns}


def _as_bytes(value) -> np.ndarray:
  return np.frombuffer(json.dumps(value).encode("utf-8"), np.uint8)


def _from_bytes(array: np.ndarray):
  return json.loads(array.tobytes().decode("utf-8"))


def _read_cache(path: str, key: dict) -> Table | None:
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as arrays:
      meta = _from_bytes(arrays["meta"])
      if {field: meta.get(field) for field in key} != key:
        why = ("its source changed" if meta.get("format") == key["format"] else
               f"format {meta.get('format')}, this version reads {key['format']}")
        _log.info("benchmark cache %s is stale (%s): rebuilding", path, why)
        return None
      text, metrics = _from_bytes(arrays["text"]), arrays["metrics"]
      if len(meta["metric_keys"]) != len(metrics):
        raise ValueError(f"{len(meta['metric_keys'])} metric names for {len(metrics)} columns")
      curves = {key: arrays[f"curve{i}"] for i, key in enumerate(meta["curve_keys"])}
      return Table(text["names"], text["equivalents"],
                   dict(zip(meta["metric_keys"], metrics)), arrays["fisher"], curves)
  # Whatever is wrong with a cache file, the source can rebuild it; never fail a load on it.
  except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
    _log.info("benchmark cache %s is unreadable (%s): rebuilding", path, e)
    return None


def _write_cache(path: str, table: Table, meta: dict):
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    metrics = np.stack(list(table.metrics.values())) if table.metrics else np.empty(
        (0, len(table)))
    # One array per curve: the curves of a table need not have the same number of epochs.
    curves = {f"curve{i}": curve for i, curve in enumerate(table.curves.values())}
    with open(tmp, "wb") as f:  # a file object: np.savez would append '.npz' to a name
      np.savez(f, meta=_as_bytes(dict(meta, metric_keys=list(table.metrics),
                                      curve_keys=list(table.curves))),
               text=_as_bytes({"names": table.names, "equivalents": table.equivalents}),
               metrics=metrics, fisher=table.fisher, **curves)
    os.replace(tmp, path)  # readers see the old cache or the new one, never half of one
  except OSError as e:
    _log.warning("could not write the benchmark cache %s (%s); loads will parse the JSON", path,
                 e)
    if os.path.exists(tmp):
      os.remove(tmp)


def load(path_or_name, *, cache_dir=None, progress: bool = False) -> Table:
  """A benchmark table, from a file or a published benchmark's name, through the cache.

  The first load of a file parses it (streaming, `read`) and writes its columns to the cache;
  later loads read the columns. Measured by `python -m bench.bench_tables` (3,000 entries,
  Fisher rows of 12,000 floats: 194 MB of JSON) on a busy 2-core machine: the first load 10-12 s
  at 160 MB above the interpreter (json.load of the file alone: 9-13 s and 1.5 GB), a cached
  load 0.15-0.4 s.

  Args:
    path_or_name: a .json or .json.gz file, 'digits' (Act-Bench-Digits, shipped with
      actbench), or 'cnn', 'resnet' or 'vit' (also 'act-bench-cnn' and the like) for a file
      that `download` put in the cache directory.
    cache_dir: default $ACTBENCH_CACHE, or ~/.cache/actbench; the columns go to its `tables/`.
    progress: a progress bar while parsing.

  Raises:
    BenchmarkError: no such file (with how to download a published one), or not the format.
  """
  cache_dir = default_cache_dir() if cache_dir is None else os.fspath(cache_dir)
  source = _source_path(path_or_name, cache_dir)
  key = _key(source)  # before reading: a change during the read makes the next load rebuild
  path = cache_path(source, cache_dir)
  table = _read_cache(path, key)
  if table is None:
    table, digest = read_hashed(source, progress=progress)
    _write_cache(path, table, dict(key, sha256=digest))
  return table
