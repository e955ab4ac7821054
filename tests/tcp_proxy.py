"""A TCP forwarder to put between one client and a server, to cut that client off alone.

    with TcpProxy("127.0.0.1", server.port) as proxy:
      worker_url = proxy.url_for(database_url)   # same database, through the proxy's port
      ...                                         # start a worker process on worker_url
      proxy.cut()       # its connections drop now; new ones are closed as soon as accepted
      proxy.restore()   # it may connect again
      proxy.hang()      # a partition instead: nothing flows, nothing is closed...
      proxy.restore()   # ...and what was held back flows on, as TCP would deliver it

One proxy per client that is to be cut: the others connect to the server directly. Threads are
daemons, one per direction of each connection, and all end on `close`.
"""

from __future__ import annotations

import socket
import threading
import urllib.parse

__all__ = ["TcpProxy"]

_OPEN, _HUNG, _CUT = "open", "hung", "cut"


class TcpProxy:
  """Forwards connections to 127.0.0.1:`port` (`listen_host`, port 0: a free one) to
  `target_host`:`target_port`."""

  def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1",
               connect_timeout: float = 10.0):
    self.target = (target_host, target_port)
    self.connect_timeout = connect_timeout
    self._lock = threading.Lock()
    self._state = _OPEN
    self._flowing = threading.Event()
    self._flowing.set()
    self._links: set[_Link] = set()
    self._closed = False
    self.accepted = 0  # connections accepted in all, cut ones included
    self._listener = socket.create_server((listen_host, 0), backlog=128)
    # A timeout, not a blocking accept: close() must end the thread, and closing a socket
    # does not wake a thread blocked on it.
    self._listener.settimeout(0.1)
    self.host, self.port = self._listener.getsockname()[:2]
    self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                      name=f"tcp-proxy-{self.port}")
    self._acceptor.start()

  def url_for(self, url: str) -> str:
    """`url` (postgresql://user@host:port/db?...) with the proxy's host and port instead."""
    parts = urllib.parse.urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@" if userinfo else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{netloc}{self.host}:{self.port}"))

  @property
  def connections(self) -> int:
    """The connections open through the proxy now."""
    with self._lock:
      return len(self._links)

  @property
  def state(self) -> str:
    return self._state

  def cut(self) -> None:
    """Closes every open connection at once, both ways (the server's sessions end too), and
    closes each new one as soon as it is accepted, until `restore`."""
    with self._lock:
      self._state = _CUT
      self._flowing.set()  # threads held by hang() see their link closed and end
      links, self._links = self._links, set()
    for link in links:
      link.close()

  def hang(self) -> None:
    """A network partition: no byte flows either way, and no connection is closed; new
    connections are accepted but never reach the server. A client waits until its own
    timeouts (connect_timeout, keepalives, statement_timeout) give up."""
    with self._lock:
      self._state = _HUNG
      self._flowing.clear()

  def restore(self) -> None:
    """Lets connections through again; after `hang`, what was held back flows on."""
    with self._lock:
      self._state = _OPEN
      self._flowing.set()

  def close(self) -> None:
    """Closes the listener and every connection; the threads end."""
    with self._lock:
      self._closed = True
      links, self._links = self._links, set()
      self._flowing.set()
    for link in links:
      link.close()
    self._acceptor.join(5.0)
    self._listener.close()

  def __enter__(self) -> TcpProxy:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  # ---- the threads

  def _accept_loop(self) -> None:
    while not self._closed:
      try:
        client, _ = self._listener.accept()
      except TimeoutError:
        continue
      except OSError:
        if self._closed:
          return
        continue
      client.settimeout(None)
      self.accepted += 1
      link = _Link(client)
      with self._lock:
        if self._state == _CUT or self._closed:
          link.close()
          continue
        self._links.add(link)
      threading.Thread(target=self._serve, args=(link,), daemon=True,
                       name=f"tcp-proxy-{self.port}-link").start()

  def _serve(self, link: _Link) -> None:
    if not self._wait_flowing(link):
      return
    try:
      upstream = socket.create_connection(self.target, timeout=self.connect_timeout)
      upstream.settimeout(None)
    except OSError:
      self._drop(link)  # the server is down: the client sees its connection closed
      return
    if not link.attach(upstream):
      upstream.close()
      return
    threading.Thread(target=self._pump, args=(link, upstream, link.client), daemon=True,
                     name=f"tcp-proxy-{self.port}-down").start()
    self._pump(link, link.client, upstream)

  def _pump(self, link: _Link, source: socket.socket, sink: socket.socket) -> None:
    try:
      while True:
        data = source.recv(65536)
        if not data:
          break
        # Held, not dropped, while hung: restore() delivers it as a healed network would.
        if not self._wait_flowing(link):
          break
        sink.sendall(data)
    except OSError:
      pass
    self._drop(link)

  def _wait_flowing(self, link: _Link) -> bool:
    while not self._flowing.wait(0.1):
      if link.closed:
        return False
    return not link.closed and not self._closed

  def _drop(self, link: _Link) -> None:
    with self._lock:
      self._links.discard(link)
    link.close()


class _Link:
  """One client connection and, once made, its connection to the server."""

  def __init__(self, client: socket.socket):
    self.client = client
    self.upstream: socket.socket | None = None
    self.closed = False
    self._lock = threading.Lock()

  def attach(self, upstream: socket.socket) -> bool:
    with self._lock:
      if self.closed:
        return False
      self.upstream = upstream
      return True

  def close(self) -> None:
    with self._lock:
      if self.closed:
        return
      self.closed = True
      sockets = [s for s in (self.client, self.upstream) if s is not None]
    for sock in sockets:
      # shutdown() first: it wakes the thread blocked in recv() on the socket, close() does not.
      try:
        sock.shutdown(socket.SHUT_RDWR)
      except OSError:
        pass
      sock.close()
