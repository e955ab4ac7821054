"""The published Act-Bench files: where they are, and fetching them into the cache directory.

The three files (about 130 MB each) are downloaded by users, never committed. `download` puts
one at `<cache dir>/act-bench-<name>.json` with a sidecar `<file>.download.json` recording its
URL and sha256; `actbench.tables.load(name)` then finds it there.
"""

from __future__ import annotations

import datetime
import json
import os

from actbench import errors
from actbench.engine import fetch

BENCHMARKS = {name: f"https://act-bench.s3.us-west-2.amazonaws.com/act-bench-{name}.json"
              for name in ("cnn", "resnet", "vit")}


class DownloadError(errors.InputError, OSError):
  """A published benchmark file could not be fetched."""


def default_cache_dir() -> str:
  """$ACTBENCH_CACHE, or ~/.cache/actbench."""
  return os.environ.get("ACTBENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                          "actbench")


def resolve_name(name) -> str | None:
  """'cnn', 'resnet' or 'vit' for a published benchmark's name ('CNN', 'act-bench-cnn',
  'act-bench-cnn.json' too); None for anything else."""
  key = str(name).strip().lower().removesuffix(".json").removeprefix("act-bench-")
  return key if key in BENCHMARKS else None


def published_path(name: str, cache_dir=None) -> str:
  """Where a published benchmark lives in the cache directory."""
  cache_dir = default_cache_dir() if cache_dir is None else os.fspath(cache_dir)
  return os.path.join(cache_dir, f"act-bench-{name}.json")


def sidecar_path(path: str) -> str:
  return f"{path}.download.json"


def _write_sidecar(path: str, record: dict):
  tmp = f"{sidecar_path(path)}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1)
  os.replace(tmp, sidecar_path(path))


def download(name: str, *, cache_dir=None, progress: bool = True) -> str:
  """Fetches a published benchmark ('cnn', 'resnet' or 'vit') into the cache directory.

  A file already there is returned without touching the network (one placed there by hand gets
  its sha256 recorded). The download streams to `<file>.part`, renamed when complete.

  Args:
    name: the benchmark; 'act-bench-cnn' and the like are accepted too.
    cache_dir: default $ACTBENCH_CACHE, or ~/.cache/actbench.
    progress: show a tqdm bar over the bytes received.

  Returns:
    The local path of the file.

  Raises:
    ValueError: an unknown name.
    DownloadError: the network or server failed; the message names the URL and where to put
      the file by hand.
  """
  canonical = resolve_name(name)
  if canonical is None:
    raise ValueError(f"unknown benchmark {name!r}; the published ones are {list(BENCHMARKS)}")
  url, path = BENCHMARKS[canonical], published_path(canonical, cache_dir)
  if os.path.exists(path):
    if not os.path.exists(sidecar_path(path)):
      _write_sidecar(path, {"url": url, "sha256": fetch.sha256_file(path),
                            "bytes": os.path.getsize(path), "placed_by_hand": True})
    return path
  try:
    fetch.fetch(url, path, progress=progress)
  except fetch.FetchError as e:
    # No resuming here: a failed download leaves the cache directory as it was.
    if os.path.exists(fetch.partial_path(path)):
      os.remove(fetch.partial_path(path))
    raise DownloadError(
        f"could not download {url}: {e.reason}. To install it by hand, fetch that URL on a "
        f"machine with network access and copy the file to {path} (the cache directory is "
        f"$ACTBENCH_CACHE, or ~/.cache/actbench, or load(..., cache_dir=...)).") from e
  now = datetime.datetime.now(datetime.timezone.utc).isoformat()
  _write_sidecar(path, {"url": url, "sha256": fetch.sha256_file(path),
                        "bytes": os.path.getsize(path), "downloaded": now})
  return path
