"""actbench.engine.fetch: resumed, verified downloads from a local HTTP server (no network)."""

from __future__ import annotations

import hashlib
import http.server
import multiprocessing
import os
import signal
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from actbench.engine import fetch

OFFLINE_URL = "http://127.0.0.1:9/archive.tar.gz"  # the discard port: nothing listens


class Server:
  """Serves `payload` at every path of http://127.0.0.1:<port>/ from a thread, honouring
  `Range: bytes=N-` unless ranges=False. `cut` bytes into its first answer it drops the
  connection (a broken download); with `pace`, it sends 64 KiB per `pace` seconds (a slow
  link). Records each request's Range header and the body bytes sent, in all and to each.
  """

  def __init__(self, payload: bytes, *, ranges: bool = True, cut: int | None = None,
               pace: float = 0.0):
    self.payload, self.ranges, self.cut, self.pace = payload, ranges, cut, pace
    self.gate: threading.Event | None = None  # when given, answers wait until it is set
    self.requests: list[str | None] = []
    self.sent = 0
    self.sent_to: list[int] = []  # per request
    self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
    self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

  @property
  def url(self) -> str:
    return f"http://127.0.0.1:{self._httpd.server_address[1]}/archive.tar.gz"

  def _handler(self):
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def do_GET(self):  # pylint: disable=invalid-name
        if server.gate is not None:
          server.gate.wait(30)
        wanted = self.headers.get("Range")
        server.requests.append(wanted)
        server.sent_to.append(0)
        which = len(server.sent_to) - 1
        start, total = 0, len(server.payload)
        if wanted and server.ranges:
          start = int(wanted.removeprefix("bytes=").removesuffix("-"))
          if start >= total:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{total}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
          self.send_response(206)
          self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        else:
          self.send_response(200)
        body = server.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut is not None:
          body, server.cut = body[:server.cut], None
          self.close_connection = True
        try:
          for start in range(0, len(body), 1 << 16):
            time.sleep(server.pace)
            piece = body[start:start + (1 << 16)]
            self.wfile.write(piece)
            server.sent += len(piece)
            server.sent_to[which] += len(piece)
        except (BrokenPipeError, ConnectionResetError):
          pass  # the client was killed

      def log_message(self, *args):  # quiet
        del args

    return Handler

  def __enter__(self) -> Server:
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._httpd.shutdown()
    self._httpd.server_close()
    self._thread.join()


def at_once(task, server: Server, result: str, n: int = 2) -> list:
  """Runs `task()` in `n` processes (forked, so the test's setup carries over) at once: each
  returns, once `server` is serving but holding back its answers, whether the file `result`
  is already there, then runs `task`; the server answers once all have started (and had time
  to reach a lock). What each returned, or its exception's text, after that first answer."""
  context = multiprocessing.get_context("fork")
  go, started, results = context.Event(), context.Queue(), context.Queue()

  def run(i):
    go.wait(30)
    started.put((i, os.path.exists(result)))
    try:
      results.put((i, task()))
    except Exception as e:  # pylint: disable=broad-except
      results.put((i, f"{type(e).__name__}: {e}"))

  children = [context.Process(target=run, args=(i,)) for i in range(n)]
  for child in children:  # before the server's thread starts: forking copies no running thread
    child.start()
  server.gate = threading.Event()
  with server:
    go.set()
    found = dict(started.get(timeout=30) for _ in children)
    time.sleep(0.2)
    server.gate.set()
    returned = dict(results.get(timeout=60) for _ in children)
  for child in children:
    child.join(10)
    assert child.exitcode == 0
  return [(found[i], returned[i]) for i in range(n)]


def _payload(n: int = 300_000, seed: int = 0) -> bytes:
  return np.random.default_rng(seed).integers(0, 256, n, np.uint8).tobytes()


def _sha(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _read(path) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def test_file_url_with_checksum(tmp_path):
  payload = _payload()
  source = tmp_path / "source.bin"
  source.write_bytes(payload)
  path = str(tmp_path / "sub" / "copy.bin")
  assert fetch.fetch(source.as_uri(), path, sha256=_sha(payload), size=len(payload),
                     progress=False) == path
  assert _read(path) == payload
  assert sorted(os.listdir(tmp_path / "sub")) == ["copy.bin"]


def test_resume_appends_only_the_missing_bytes(tmp_path):
  payload = _payload()
  path = tmp_path / "a.bin"
  (tmp_path / "a.bin.part").write_bytes(payload[:123_457])
  with Server(payload) as server:
    fetch.fetch(server.url, path, sha256=_sha(payload), progress=False)
  assert server.requests == ["bytes=123457-"]
  assert server.sent == len(payload) - 123_457
  assert _read(path) == payload
  assert not os.path.exists(fetch.partial_path(str(path)))


def test_server_ignoring_range_restarts_from_zero(tmp_path):
  payload = _payload()
  path = tmp_path / "a.bin"
  (tmp_path / "a.bin.part").write_bytes(b"\0" * 5000)  # wrong bytes: must not survive
  with Server(payload, ranges=False) as server:
    fetch.fetch(server.url, path, sha256=_sha(payload), progress=False)
  assert server.requests == ["bytes=5000-"] and server.sent == len(payload)
  assert _read(path) == payload


def test_broken_connection_keeps_the_part_and_the_next_call_resumes(tmp_path):
  payload = _payload()
  path = str(tmp_path / "a.bin")
  with Server(payload, cut=100_000) as server:
    with pytest.raises(fetch.FetchError, match=f"after 100000 of {len(payload)} bytes") as error:
      fetch.fetch(server.url, path, sha256=_sha(payload), progress=False)
    assert isinstance(error.value, OSError)
    assert server.url in str(error.value) and path in str(error.value)
    assert not os.path.exists(path)
    assert _read(fetch.partial_path(path)) == payload[:100_000]
    fetch.fetch(server.url, path, sha256=_sha(payload), progress=False)
  assert server.requests == [None, "bytes=100000-"]
  assert server.sent == len(payload)  # every byte exactly once over the two calls
  assert _read(path) == payload


def test_part_past_the_end_restarts(tmp_path):
  payload = _payload(1000)
  path = tmp_path / "a.bin"
  (tmp_path / "a.bin.part").write_bytes(b"x" * 2000)
  with Server(payload) as server:  # no size given: the server's 416 says the range is bad
    fetch.fetch(server.url, path, progress=False)
  assert server.requests == ["bytes=2000-", None]
  assert _read(path) == payload
  (tmp_path / "b.bin.part").write_bytes(b"x" * 2000)
  with Server(payload) as server:  # with the size, the .part is known bad before asking
    fetch.fetch(server.url, tmp_path / "b.bin", size=1000, progress=False)
  assert server.requests == [None] and _read(tmp_path / "b.bin") == payload


def test_a_complete_part_is_verified_without_the_network(tmp_path, monkeypatch):
  payload = _payload(1000)
  path = tmp_path / "a.bin"
  (tmp_path / "a.bin.part").write_bytes(payload)
  monkeypatch.setattr(urllib.request, "urlopen", None)  # any network use would fail
  fetch.fetch("http://unused.invalid/a.bin", path, sha256=_sha(payload), size=1000,
              progress=False)
  assert _read(path) == payload and not os.path.exists(f"{path}.part")


def test_wrong_checksum_or_size_deletes_the_download(tmp_path):
  payload = _payload(5000)
  source = tmp_path / "source.bin"
  source.write_bytes(payload)
  path = str(tmp_path / "out" / "a.bin")
  with pytest.raises(fetch.ChecksumError, match=f"its sha256 is {_sha(payload)}, expected "
                     f"{'ab' * 32}") as error:
    fetch.fetch(source.as_uri(), path, sha256="AB" * 32, progress=False)
  assert source.as_uri() in str(error.value) and path in str(error.value)
  assert os.listdir(tmp_path / "out") == []
  with pytest.raises(fetch.ChecksumError, match="it has 5,000 bytes, expected 4,999"):
    fetch.fetch(source.as_uri(), path, sha256=_sha(payload), size=4999, progress=False)
  assert os.listdir(tmp_path / "out") == []


def test_a_file_in_place_is_used_without_the_network(tmp_path, monkeypatch):
  payload = _payload(5000)
  path = str(tmp_path / "a.bin")
  with open(path, "wb") as f:
    f.write(payload)
  monkeypatch.setattr(urllib.request, "urlopen", None)
  assert fetch.fetch("http://unused.invalid/a.bin", path, progress=False) == path
  assert fetch.fetch("http://unused.invalid/a.bin", path, sha256=_sha(payload),
                     size=5000) == path
  with pytest.raises(fetch.ChecksumError, match="Remove it") as error:
    fetch.fetch("http://unused.invalid/a.bin", path, sha256="0" * 64)
  assert path in str(error.value)
  assert _read(path) == payload  # a file the user placed is never deleted


def test_offline_and_http_errors_name_the_url_and_the_path(tmp_path):
  path = str(tmp_path / "a.bin")
  with pytest.raises(fetch.FetchError) as error:
    fetch.fetch(OFFLINE_URL, path, progress=False)
  assert OFFLINE_URL in str(error.value) and path in str(error.value)
  assert error.value.url == OFFLINE_URL and error.value.path == path
  assert os.listdir(tmp_path) == []

  def not_found(request, timeout=None):
    raise urllib.error.HTTPError(request.full_url, 404, "Not Found", {}, None)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(urllib.request, "urlopen", not_found)
    with pytest.raises(fetch.FetchError, match="HTTP 404 Not Found"):
      fetch.fetch("https://example.invalid/a.bin", path, progress=False)


def test_two_processes_fetching_one_file_download_it_once(tmp_path):
  payload = _payload(600_000, seed=5)
  path = str(tmp_path / "a.bin")
  server = Server(payload)
  task = lambda: fetch.fetch(server.url, path, sha256=_sha(payload), progress=False)
  assert at_once(task, server, path) == [(False, path), (False, path)]  # both before the file
  assert server.requests == [None] and server.sent == len(payload)  # one download, in full
  assert _read(path) == payload
  assert os.listdir(tmp_path) == ["a.bin"]  # no .part, no .lock


def test_a_download_killed_midway_is_resumed_by_the_next_process(tmp_path):
  payload = _payload(3 << 20, seed=6)  # above the 1 MiB read size: written in pieces
  path = str(tmp_path / "a.bin")
  part = fetch.partial_path(path)
  server = Server(payload, pace=0.02)
  child = multiprocessing.get_context("fork").Process(
      target=fetch.fetch, args=(server.url, path), kwargs={"progress": False})
  child.start()
  with server:
    deadline = time.monotonic() + 20
    while not (os.path.exists(part) and os.path.getsize(part)) and time.monotonic() < deadline:
      time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert os.path.exists(fetch.lock_path(path))  # killed holding it: the kernel freed it
    kept = os.path.getsize(part)
    assert 0 < kept < len(payload)
    server.pace = 0.0
    fetch.fetch(server.url, path, sha256=_sha(payload), progress=False)
  assert server.requests == [None, f"bytes={kept}-"]
  assert server.sent_to[1] == len(payload) - kept
  assert _read(path) == payload
  assert os.listdir(tmp_path) == ["a.bin"]


def damage_after_streaming(monkeypatch, damage):
  """Makes every download's .part on disk differ from what was streamed: `damage(part)` runs
  once the stream is written, fsynced and closed."""
  stream = fetch._stream  # pylint: disable=protected-access

  def damaged(url, part, offset, progress):
    received = stream(url, part, offset, progress)
    damage(part)
    return received

  monkeypatch.setattr(fetch, "_stream", damaged)
  return stream


def flip_byte(part, at=1000):
  with open(part, "r+b") as f:
    f.seek(at)
    byte = f.read(1)[0]
    f.seek(at)
    f.write(bytes([byte ^ 1]))


def test_a_part_damaged_on_disk_after_streaming_is_refused_not_renamed(tmp_path, monkeypatch):
  payload = _payload()
  damaged = bytearray(payload)
  damaged[1000] ^= 1
  path = str(tmp_path / "a.bin")
  stream = damage_after_streaming(monkeypatch, flip_byte)
  with Server(payload) as server:
    for sha256 in (_sha(payload), None):  # refused even with no checksum to compare with
      with pytest.raises(fetch.ChecksumError, match="not the bytes received") as error:
        fetch.fetch(server.url, path, sha256=sha256, progress=False)
      assert _sha(bytes(damaged)) in str(error.value) and _sha(payload) in str(error.value)
      assert os.listdir(tmp_path) == []  # not renamed, and the .part deleted
    monkeypatch.setattr(fetch, "_stream", stream)
    fetch.fetch(server.url, path, sha256=_sha(payload), progress=False)
  assert server.requests == [None, None, None]  # each download from the start
  assert _read(path) == payload


def test_a_file_unlike_the_size_the_server_announced_is_refused(tmp_path, monkeypatch):
  payload = _payload(5000)
  path = str(tmp_path / "a.bin")

  def grow(part):
    with open(part, "ab") as f:
      f.write(b"x")

  damage_after_streaming(monkeypatch, grow)
  with Server(payload) as server:
    with pytest.raises(fetch.ChecksumError,
                       match="it has 5,001 bytes on disk, but the server announced 5,000"):
      fetch.fetch(server.url, path, progress=False)
  assert os.listdir(tmp_path) == []


def test_locked_excludes_other_holders_and_leaves_no_lock_file(tmp_path):
  path = str(tmp_path / "a.bin")
  events, first_holds = [], threading.Event()

  def second():
    first_holds.wait(10)
    with fetch.locked(path):  # a descriptor of its own: excluded as another process would be
      events.append("second holds")

  thread = threading.Thread(target=second, daemon=True)
  thread.start()
  with fetch.locked(path):
    assert os.path.exists(fetch.lock_path(path))
    first_holds.set()
    time.sleep(0.2)  # the second waits on the file this holder removes on release
    events.append("first releases")
  thread.join(10)
  assert events == ["first releases", "second holds"]
  assert os.listdir(tmp_path) == []
