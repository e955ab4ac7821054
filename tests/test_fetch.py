"""actbench.engine.fetch: resumed, verified downloads from a local HTTP server (no network)."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from actbench.engine import fetch

OFFLINE_URL = "http://127.0.0.1:9/archive.tar.gz"  # the discard port: nothing listens


class Server:
  """Serves `payload` at every path of http://127.0.0.1:<port>/ from a thread, honouring
  `Range: bytes=N-` unless ranges=False. `cut` bytes into its first answer it drops the
  connection (a broken download). Records each request's Range header and the body bytes sent.
  """

  def __init__(self, payload: bytes, *, ranges: bool = True, cut: int | None = None):
    self.payload, self.ranges, self.cut = payload, ranges, cut
    self.requests: list[str | None] = []
    self.sent = 0
    self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
    self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

  @property
  def url(self) -> str:
    return f"http://127.0.0.1:{self._httpd.server_address[1]}/archive.tar.gz"

  def _handler(self):
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def do_GET(self):  # pylint: disable=invalid-name
        wanted = self.headers.get("Range")
        server.requests.append(wanted)
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
        self.wfile.write(body)
        server.sent += len(body)

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
