"""Downloading one large file safely: resumable, verified, renamed into place only when right.

Shared by dataset preparation (`actbench.engine.prepare`) and the benchmark tables
(`actbench.tables.download`). A download streams to `<path>.part`; a `.part` left by a broken
connection or a killed process is resumed with an HTTP Range request. When the server has sent
everything, the `.part` is closed, fsynced and read back from disk: that file, not the bytes as
they arrived, must have the server's announced size, the given size and sha256, and hash like
the bytes received; only then is it renamed to `path`. So `path` existing means "this file is
good", and a file put there by hand is used without the network.

Many processes (on one machine, or several sharing a filesystem whose flock works across
machines, as Linux NFS's does) may fetch one file at once: the download holds a lock, `locked`,
so one process downloads and the others wait for it and then find the file in place.

    from actbench.engine import fetch
    fetch.fetch(url, "/data/archive.tgz", sha256="4bac...")   # FetchError (an OSError) if not
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.request

import tqdm

from actbench import errors

try:
  import fcntl
except ImportError:  # not POSIX: no file locks; concurrent fetches of one file are not kept apart
  fcntl = None

LOCKING = fcntl is not None
_CHUNK_BYTES = 1 << 20
_TIMEOUT_S = 60  # per blocking socket operation, not for the whole download
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")
_log = logging.getLogger(__name__)


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


@dataclasses.dataclass(frozen=True)
class Verified:
  """A finished download waiting in `partial_path(path)`, as read back from disk."""
  path: str
  sha256: str
  size: int
  announced: int | None  # the size the server announced (Content-Length), when it did


def partial_path(path: str) -> str:
  """Where an unfinished download of `path` lives (and is resumed from)."""
  return f"{path}.part"


def lock_path(path: str) -> str:
  """The lock file of `path` while a process holds `locked(path)`."""
  return f"{path}.lock"


# ---------------------------------------------------------------- one process at a time


@contextlib.contextmanager
def locked(path):
  """Holds the lock of `path` (a file or directory, existing or not; its parent must exist),
  waiting while another process holds it.

  An flock on `lock_path(path)`: the kernel drops it when its process dies, so a killed holder
  never blocks the others. The holder removes the lock file on release, so none is left
  behind; a waiter that then gets the removed file's lock takes the new file's instead.
  Without fcntl (not POSIX) this holds nothing.
  """
  if fcntl is None:
    yield
    return
  lock = lock_path(os.fspath(path))
  fd = _acquire(lock)
  try:
    yield
  finally:
    try:
      os.unlink(lock)  # while still holding it: a waiter then finds its file gone and retries
    except FileNotFoundError:
      pass
    finally:
      os.close(fd)


def _acquire(lock: str) -> int:
  """An open descriptor of `lock`, flocked, that is still the file at that path."""
  while True:
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        _log.info("waiting for another process working on %s", lock.removesuffix(".lock"))
        fcntl.flock(fd, fcntl.LOCK_EX)
      if _is_at(fd, lock):
        return fd
    except BaseException:
      os.close(fd)
      raise
    os.close(fd)


def _is_at(fd: int, path: str) -> bool:
  try:
    on_disk = os.stat(path)
  except FileNotFoundError:
    return False
  held = os.fstat(fd)
  return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


# ---------------------------------------------------------------- checking


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


def _read_back(path: str) -> tuple[str, int]:
  """The sha256 and size of a file, both from one reading of it."""
  digest, length = hashlib.sha256(), 0
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK_BYTES):
      digest.update(chunk)
      length += len(chunk)
  return digest.hexdigest(), length


def _mismatch(digest: str, length: int, sha256: str | None, size: int | None) -> str | None:
  """What is wrong with a file of this digest and length, or None when it is as expected."""
  if size is not None and length != size:
    return f"it has {length:,} bytes, expected {size:,}"
  if sha256 is not None and digest != sha256.lower():
    return f"its sha256 is {digest}, expected {sha256.lower()}"
  return None


def _not_received(digest: str, length: int, streamed: str | None,
                  announced: int | None) -> str | None:
  """What tells a file on disk from what the server sent, or None when nothing does."""
  if announced is not None and length != announced:
    return f"it has {length:,} bytes on disk, but the server announced {announced:,}"
  if streamed is not None and digest != streamed:
    return (f"the file on disk (sha256 {digest}) is not the bytes received (sha256 {streamed}): "
            f"a disk or filesystem fault, or another program wrote to it")
  return None


# ---------------------------------------------------------------- downloading


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


def _stream(url: str, part: str, offset: int, progress: bool) -> tuple[str, int | None]:
  """Streams `url` into `part`, appending from `offset` when the server honours the range, and
  fsyncs it: the sha256 of the file as received (its first `offset` bytes read from `part`)
  and its size as the server announced it. Raises on network failure, leaving `part`."""
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
      f.flush()
      os.fsync(f.fileno())
  if total is not None and received != total:
    raise http.client.HTTPException(f"the connection closed after {received} of {total} bytes")
  return digest.hexdigest(), total


def _receive(url: str, path: str, size: int | None,
             progress: bool) -> tuple[str | None, int | None]:
  """Completes `partial_path(path)` from the server: (the sha256 of the bytes received, the
  size the server announced), each None when unknown (a `.part` already of `size` bytes is
  not asked for)."""
  part = partial_path(path)
  offset = os.path.getsize(part) if os.path.exists(part) else 0
  if size is not None and offset >= size:
    if offset == size:  # finished before a crash, never renamed: verified by the caller
      return None, None
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


def download(url: str, path, *, sha256: str | None = None, size: int | None = None,
             progress: bool = True) -> Verified:
  """Downloads `url` into `partial_path(path)` and verifies it, without renaming it: for a
  caller that records the file (`install` renames it) and holds `locked(path)`.

  Resumes a `.part` left behind. The finished file is read back from disk after it was
  fsynced; it must have the size the server announced, hash like the bytes received, and have
  `size` and `sha256` when given.

  Raises:
    ChecksumError: the file is not right; the `.part` is deleted.
    FetchError: the network or server failed; the `.part` is kept for the next attempt.
  """
  path = os.fspath(path)
  part = partial_path(path)
  streamed, announced = _receive(url, path, size, progress)
  digest, length = _read_back(part)
  problem = (_not_received(digest, length, streamed, announced)
             or _mismatch(digest, length, sha256, size))
  if problem:
    os.remove(part)
    raise ChecksumError(url, path, problem, (
        f"the download of {url} is corrupt: {problem}. It was deleted; try again, or fetch "
        f"the file on another machine and place it at {path}"))
  return Verified(path, digest, length, announced)


def install(verified: Verified):
  """Renames a verified download into place, durably where the system allows."""
  os.replace(partial_path(verified.path), verified.path)
  try:
    directory = os.open(os.path.dirname(os.path.abspath(verified.path)), os.O_RDONLY)
    try:
      os.fsync(directory)  # so that the rename itself survives a crash
    finally:
      os.close(directory)
  except OSError:
    pass  # Windows and some network filesystems cannot sync a directory: the rename stands


def _check_in_place(url: str, path: str, sha256: str | None, size: int | None):
  """Raises ChecksumError when the file at `path` has not the given sha256 and size."""
  if sha256 is None and size is None:
    return
  problem = _mismatch(sha256_file(path), os.path.getsize(path), sha256, size)
  if problem:
    raise ChecksumError(url, path, problem, (
        f"{path} is not the file of {url}: {problem}. Remove it (or replace it with the "
        f"right file) and try again"))


def fetch(url: str, path, *, sha256: str | None = None, size: int | None = None,
          progress: bool = True) -> str:
  """Fetches `url` to `path` unless a file is there already; returns `path`.

  Streams to `path + ".part"`, resuming a `.part` a broken download left behind (HTTP Range;
  a server answering with the whole file restarts it from zero), and renames it to `path`
  only when the file on disk is complete and has the given size and sha256 (`download`). A
  file already at `path` is used without the network, after checking it against `sha256` and
  `size` when given. Processes fetching one `path` at once take turns (`locked`): the first
  downloads it, the others find it in place. file:// URLs work too.

  Raises:
    ChecksumError: the downloaded file has the wrong size or sha256 (it is deleted), or the
      file already at `path` does (it is left for the user to replace).
    FetchError: the network or server failed, or the directory of `path` is not writable; the
      `.part` is kept for the next attempt. The message names the URL and `path`, where the
      file can be placed by hand.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    with contextlib.ExitStack() as stack:
      try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        stack.enter_context(locked(path))
      except OSError as e:
        raise FetchError(url, path, str(e), f"cannot download {url} to {path}: {e}") from e
      if not os.path.exists(path):  # else another process fetched it while this one waited
        install(download(url, path, sha256=sha256, size=size, progress=progress))
        return path
  _check_in_place(url, path, sha256, size)
  return path
