"""Downloading one large file safely: resumable, verified, renamed into place only when right.

Shared by dataset preparation (`actbench.engine.prepare`) and the benchmark tables
(`actbench.tables.download`). A download streams to `<path>.part`; a `.part` left by a broken
connection is resumed with an HTTP Range request, and the file appears at `path` only once it
is complete and matches its size and sha256. So `path` existing means "this file is good", and
a file put there by hand is used without the network.

    from actbench.engine import fetch
    fetch.fetch(url, "/data/archive.tgz", sha256="4bac...")   # FetchError (an OSError) if not
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request

import tqdm

from actbench import errors

_CHUNK_BYTES = 1 << 20
_TIMEOUT_S = 60  # per blocking socket operation, not for the whole download
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


class FetchError(errors.InputError, OSError):
  """A file could not be fetched; `url`, `path` and `reason` say which, where and why."""

  def __init__(self, url: str, path: str, reason: str, message: str | None = None):
    super().__init__(message or (
        f"could not download {url}: {reason}. Without network access, fetch that URL on "
        f"another machine and place the file at {path}"))
    self.url, self.path, self.reason = url, path, reason


class ChecksumError(FetchError):
  """A file is complete but not the expected one (wrong size or sha256)."""


class _BadRange(http.client.HTTPException):
  """The server answered a resumed request with bytes from somewhere else."""


def partial_path(path: str) -> str:
  """Where an unfinished download of `path` lives (and is resumed from)."""
  return f"{path}.part"


def sha256_file(path: str) -> str:
  """The sha256 of a file, in hex."""
  return _hash_prefix(path).hexdigest()


def _hash_prefix(path: str, limit: int | None = None):
  """The running sha256 of a file's first `limit` bytes (all of it by default), to resume."""
  digest, left = hashlib.sha256(), limit
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK_BYTES if left is None else min(_CHUNK_BYTES, left)):
      digest.update(chunk)
      if left is not None:
        left -= len(chunk)
  return digest


def _mismatch(digest: str, length: int, sha256: str | None, size: int | None) -> str | None:
  """What is wrong with a file of this digest and length, or None when it is as expected."""
  if size is not None and length != size:
    return f"it has {length:,} bytes, expected {size:,}"
  if sha256 is not None and digest != sha256.lower():
    return f"its sha256 is {digest}, expected {sha256.lower()}"
  return None


def _reason(error: Exception) -> str:
  if isinstance(error, urllib.error.HTTPError):
    return f"HTTP {error.code} {error.reason}"
  if isinstance(error, urllib.error.URLError):
    return str(error.reason)
  return str(error) or type(error).__name__


def _start(response, offset: int) -> tuple[int, int | None]:
  """(where the body starts in the file, the file's total size or None) for a response to a
  request for bytes from `offset` on. A server that ignores Range (or a file:// URL) sends
  the whole file from byte 0; a start other than `offset` is never appended."""
  length = response.headers.get("Content-Length")
  length = int(length) if length and length.isdigit() else None
  if offset and response.status == 206:
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if match and int(match.group(1)) == offset:
      total = match.group(2)
      return offset, int(total) if total != "*" else (None if length is None else offset + length)
    raise _BadRange(f"the server answered a request for bytes {offset}- with "
                    f"Content-Range {response.headers.get('Content-Range')!r}")
  return 0, length


def _stream(url: str, part: str, offset: int, progress: bool) -> tuple[str, int]:
  """Streams `url` into `part`, appending from `offset` when the server honours the range;
  the sha256 and size of the whole file. Raises on network failure, leaving `part`."""
  headers = {"User-Agent": "actbench"}
  if offset:
    headers["Range"] = f"bytes={offset}-"
  request = urllib.request.Request(url, headers=headers)
  with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
    offset, total = _start(response, offset)
    digest = _hash_prefix(part, offset) if offset else hashlib.sha256()
    received = offset
    with open(part, "ab" if offset else "wb") as f, tqdm.tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
        desc=os.path.basename(part.removesuffix(".part")), disable=not progress) as bar:
      while chunk := response.read(_CHUNK_BYTES):
        f.write(chunk)
        digest.update(chunk)
        received += len(chunk)
        bar.update(len(chunk))
  if total is not None and received != total:
    raise http.client.HTTPException(f"the connection closed after {received} of {total} bytes")
  return digest.hexdigest(), received


def _download(url: str, path: str, size: int | None, progress: bool) -> tuple[str, int]:
  """The sha256 and size of `partial_path(path)` once the server has sent all of it."""
  part = partial_path(path)
  offset = os.path.getsize(part) if os.path.exists(part) else 0
  if size is not None and offset >= size:
    if offset == size:  # finished before a crash, never renamed: verified by the caller
      return sha256_file(part), offset
    offset = 0
  try:
    try:
      return _stream(url, part, offset, progress)
    except urllib.error.HTTPError as e:
      if not offset or e.code != 416:  # 416: the range is past the end: the .part is bad
        raise
    except _BadRange:
      pass  # start over
    return _stream(url, part, 0, progress)
  except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts, resets
    raise FetchError(url, path, _reason(e)) from e


def fetch(url: str, path, *, sha256: str | None = None, size: int | None = None,
          progress: bool = True) -> str:
  """Fetches `url` to `path` unless a file is there already; returns `path`.

  Streams to `path + ".part"`, resuming a `.part` a broken download left behind (HTTP Range;
  a server answering with the whole file restarts it from zero), and renames it to `path`
  only when it is complete and has the given size and sha256. A file already at `path` is
  used without the network, after checking it against `sha256` and `size` when given.
  file:// URLs work too.

  Raises:
    ChecksumError: the downloaded file has the wrong size or sha256 (it is deleted), or the
      file already at `path` does (it is left for the user to replace).
    FetchError: the network or server failed; the `.part` is kept for the next attempt. The
      message names the URL and `path`, where the file can be placed by hand.
  """
  path = os.fspath(path)
  if os.path.exists(path):
    if sha256 is None and size is None:
      return path
    problem = _mismatch(sha256_file(path), os.path.getsize(path), sha256, size)
    if problem:
      raise ChecksumError(url, path, problem, (
          f"{path} is not the file of {url}: {problem}. Remove it (or replace it with the "
          f"right file) and try again"))
    return path
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  digest, length = _download(url, path, size, progress)
  problem = _mismatch(digest, length, sha256, size)
  if problem:
    os.remove(partial_path(path))
    raise ChecksumError(url, path, problem, (
        f"the download of {url} is corrupt: {problem}. It was deleted; try again, or fetch "
        f"the file on another machine and place it at {path}"))
  os.replace(partial_path(path), path)
  return path
