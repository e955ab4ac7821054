"""The published Act-Bench files: where they are, and fetching them into the cache directory.

The three files (about 130 MB each) are downloaded by users, never committed. `download` puts
one at `<cache dir>/act-bench-<name>.json` with a sidecar `<file>.download.json` recording its
URL and sha256; `actbench.tables.load(name)` then finds it there.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import json
import os
import urllib.error
import urllib.request

import tqdm

BENCHMARKS = {name: f"https://act-bench.s3.us-west-2.amazonaws.com/act-bench-{name}.json"
              for name in ("cnn", "resnet", "vit")}

_CHUNK_BYTES = 1 << 20
_TIMEOUT_S = 60


class DownloadError(OSError):
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


def sha256_file(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK_BYTES):
      digest.update(chunk)
  return digest.hexdigest()


def _write_sidecar(path: str, record: dict):
  tmp = f"{sidecar_path(path)}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1)
  os.replace(tmp, sidecar_path(path))


def _fetch(url: str, part: str, progress: bool) -> tuple[str, int]:
  """Streams `url` into the file `part`; its sha256 and size."""
  request = urllib.request.Request(url, headers={"User-Agent": "actbench"})
  digest, size = hashlib.sha256(), 0
  with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
    length = response.headers.get("Content-Length")
    expected = int(length) if length and length.isdigit() else None
    with open(part, "wb") as f, tqdm.tqdm(total=expected, unit="B", unit_scale=True,
                                          unit_divisor=1024, desc=os.path.basename(url),
                                          disable=not progress) as bar:
      while chunk := response.read(_CHUNK_BYTES):
        f.write(chunk)
        digest.update(chunk)
        size += len(chunk)
        bar.update(len(chunk))
  if expected is not None and size != expected:
    raise DownloadError(f"the connection closed after {size} of {expected} bytes")
  return digest.hexdigest(), size


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
      _write_sidecar(path, {"url": url, "sha256": sha256_file(path),
                            "bytes": os.path.getsize(path), "placed_by_hand": True})
    return path
  os.makedirs(os.path.dirname(path), exist_ok=True)
  part = f"{path}.part"
  try:
    digest, size = _fetch(url, part, progress)
  except (OSError, http.client.HTTPException) as e:  # URLError and HTTPError are OSErrors
    if os.path.exists(part):
      os.remove(part)
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    raise DownloadError(
        f"could not download {url}: {reason}. To install it by hand, fetch that URL on a "
        f"machine with network access and copy the file to {path} (the cache directory is "
        f"$ACTBENCH_CACHE, or ~/.cache/actbench, or load(..., cache_dir=...)).") from e
  os.replace(part, path)
  _write_sidecar(path, {"url": url, "sha256": digest, "bytes": size,
                        "downloaded": datetime.datetime.now(datetime.timezone.utc).isoformat()})
  return path
