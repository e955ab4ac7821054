"""The published Act-Bench files: where they are, and fetching them into the cache directory.

The three files (about 130 MB each) are downloaded by users, never committed. `download` puts
one at `<cache dir>/act-bench-<name>.json` with a sidecar `<file>.download.json` recording its
URL, size and sha256; `actbench.tables.load(name)` then finds it there.

Their publisher documents no checksums, so a download is trusted on first use: the file must
have the size the server announced and be, as read back from disk, the bytes received; its
sha256 is then recorded in the sidecar, and a file found in place later must still match it
(`check_in_place`). `PUBLISHED` pins a file's size and sha256 where they are known.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os

from actbench import errors
from actbench.engine import fetch

BENCHMARKS = {name: f"https://act-bench.s3.us-west-2.amazonaws.com/act-bench-{name}.json"
              for name in ("cnn", "resnet", "vit")}
# name -> (bytes, sha256) of the published file, checked on download and in place. None is
# documented (github.com/cognizant-ai-labs/act-bench gives only the URLs): pin them here once
# known from a trusted source.
PUBLISHED: dict[str, tuple[int, str]] = {}

# realpath -> (bytes, mtime_ns, sha256) of files this process hashed and found matching their
# sidecar: later checks of an unchanged file compare its size and mtime only.
_checked: dict[str, tuple[int, int, str]] = {}


class DownloadError(errors.InputError, OSError):
  """A published benchmark file could not be fetched, or is not the file that was."""


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
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, sidecar_path(path))


def _read_sidecar(path: str) -> dict | None:
  """The sidecar's record, or None when there is none (a file placed by hand)."""
  try:
    with open(sidecar_path(path), encoding="utf-8") as f:
      record = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    raise DownloadError(f"{sidecar_path(path)} is unreadable ({e}); delete it to record "
                        f"{path}'s checksum afresh, or delete both to fetch it again") from e
  if not (isinstance(record, dict) and isinstance(record.get("bytes"), int)
          and isinstance(record.get("sha256"), str)):
    raise DownloadError(f"{sidecar_path(path)} is not a download record; delete it to record "
                        f"{path}'s checksum afresh, or delete both to fetch it again")
  return record


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat()


def _remember(path: str, stat: os.stat_result, sha256: str):
  """Records that `path`, as `stat` saw it before it was hashed, has this sha256."""
  _checked[os.path.realpath(path)] = (stat.st_size, stat.st_mtime_ns, sha256)


def _refuse(name: str, path: str, problem: str) -> DownloadError:
  return DownloadError(
      f"{path} is not the file downloaded from {BENCHMARKS[name]}: {problem}. It was changed "
      f"or damaged since; delete it and run actbench.tables.download({name!r}) to fetch it "
      f"again")


def check_in_place(name: str, cache_dir=None) -> str:
  """The path of published benchmark `name` in the cache directory, once checked.

  Its size must match its sidecar's (always checked); its sha256 too, hashed the first time
  this process checks it and whenever its size or mtime changed since. A file without a
  sidecar (placed by hand) has its size and sha256 recorded as they are. Files in `PUBLISHED`
  must also have the pinned size and sha256.

  Raises:
    DownloadError: the file does not match; the message says to delete it to fetch it again.
  """
  path = published_path(name, cache_dir)
  record = _read_sidecar(path)
  stat = os.stat(path)
  if record is None:
    digest = fetch.sha256_file(path)
    _check_pin(name, path, stat.st_size, digest)
    _write_sidecar(path, {"url": BENCHMARKS[name], "sha256": digest, "bytes": stat.st_size,
                          "placed_by_hand": True, "recorded": _now()})
    _remember(path, stat, digest)
    return path
  if stat.st_size != record["bytes"]:
    raise _refuse(name, path, f"it has {stat.st_size:,} bytes, {record['bytes']:,} when "
                              f"downloaded ({sidecar_path(path)})")
  if _checked.get(os.path.realpath(path)) == (stat.st_size, stat.st_mtime_ns, record["sha256"]):
    return path
  digest = fetch.sha256_file(path)
  if digest != record["sha256"]:
    raise _refuse(name, path, f"its sha256 is {digest}, {record['sha256']} when downloaded "
                              f"({sidecar_path(path)})")
  _check_pin(name, path, stat.st_size, digest)
  _remember(path, stat, digest)
  return path


def _check_pin(name: str, path: str, size: int, sha256: str):
  if name in PUBLISHED and (size, sha256) != PUBLISHED[name]:
    raise DownloadError(
        f"{path} is not the published {BENCHMARKS[name]}: it has {size:,} bytes and sha256 "
        f"{sha256}; the published file has {PUBLISHED[name][0]:,} and {PUBLISHED[name][1]}. "
        f"Delete it and run actbench.tables.download({name!r}) to fetch it again")


def _fetch(name: str, path: str, progress: bool):
  """Downloads `name` to `path`, the sidecar written before the file appears there; called
  holding `fetch.locked(path)`."""
  url = BENCHMARKS[name]
  size, sha256 = PUBLISHED.get(name, (None, None))
  try:
    verified = fetch.download(url, path, sha256=sha256, size=size, progress=progress)
  except fetch.ChecksumError as e:
    raise DownloadError(f"the download of {url} is corrupt: {e.reason}. It was deleted; run "
                        f"actbench.tables.download({name!r}) again") from e
  except fetch.FetchError as e:
    # No resuming here: a failed download leaves the cache directory as it was.
    if os.path.exists(fetch.partial_path(path)):
      os.remove(fetch.partial_path(path))
    raise DownloadError(
        f"could not download {url}: {e.reason}. To install it by hand, fetch that URL on a "
        f"machine with network access and copy the file to {path} (the cache directory is "
        f"$ACTBENCH_CACHE, or ~/.cache/actbench, or load(..., cache_dir=...)).") from e
  if verified.announced is None and sha256 is None:
    os.remove(fetch.partial_path(path))
    raise DownloadError(f"the server of {url} did not announce the file's size (no "
                        f"Content-Length), so the download cannot be checked; try again later, "
                        f"or fetch it by hand and copy it to {path}")
  _write_sidecar(path, {"url": url, "sha256": verified.sha256, "bytes": verified.size,
                        "downloaded": _now()})
  fetch.install(verified)
  _remember(path, os.stat(path), verified.sha256)


def download(name: str, *, cache_dir=None, progress: bool = True) -> str:
  """Fetches a published benchmark ('cnn', 'resnet' or 'vit') into the cache directory.

  A file already there is checked against its sidecar (`check_in_place`) without touching the
  network (one placed there by hand gets its size and sha256 recorded). The download streams
  to `<file>.part`, is read back from disk and checked against the size the server announced
  (and `PUBLISHED`), and renamed into place after its sidecar is written. Processes
  downloading one file at once take turns: the first downloads it, the others find it.

  Args:
    name: the benchmark; 'act-bench-cnn' and the like are accepted too.
    cache_dir: default $ACTBENCH_CACHE, or ~/.cache/actbench.
    progress: show a tqdm bar over the bytes received.

  Returns:
    The local path of the file.

  Raises:
    ValueError: an unknown name.
    DownloadError: the network or server failed (the message names the URL and where to put
      the file by hand), the download is corrupt, or the file in place is not the one that
      was downloaded (the message says to delete it).
  """
  canonical = resolve_name(name)
  if canonical is None:
    raise ValueError(f"unknown benchmark {name!r}; the published ones are {list(BENCHMARKS)}")
  path = published_path(canonical, cache_dir)
  if not os.path.exists(path):
    with contextlib.ExitStack() as stack:
      try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        stack.enter_context(fetch.locked(path))
      except OSError as e:
        raise DownloadError(f"cannot download {BENCHMARKS[canonical]} to {path}: {e}") from e
      if not os.path.exists(path):  # else another process downloaded it while this one waited
        _fetch(canonical, path, progress)
        return path
  return check_in_place(canonical, cache_dir)
