"""A real PostgreSQL server for tests, in a temporary directory, on a free port of 127.0.0.1.

    with PostgresServer() as server:                 # initdb (about 1 s) and start
      url = server.new_database("t_claims")          # postgresql://actbench@127.0.0.1:PORT/t_claims
      ...
      server.stop(mode="immediate")                  # a crash: no checkpoint, clients cut off
      server.start()                                 # crash recovery, same port, same data

The binaries come from $ACTBENCH_PG_BIN, else `pg_config --bindir`, else PATH, else the usual
install directories (/usr/lib/postgresql/*/bin, ...). PostgreSQL refuses to run as root: under
root (here and in CI) the server runs as the `postgres` user (else `nobody`), and the temporary
directory is handed to that user. Authentication is `trust`, on 127.0.0.1 and the server's own
socket directory only; the superuser is `actbench`, and so is the default database.

fsync stays on: the tests that crash the server check that what was committed survives it.
Crash recovery begins by syncing the data directory: one syncfs() call (Linux), as file-by-file
fsync of initdb's thousand files took 4 s of every start after a crash.
`postgres` runs as a direct child of this process, so a stop is a signal to it (what `pg_ctl
stop -m MODE` sends) and nothing outlives the test session but a process killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import weakref

__all__ = ["DATABASE", "USER", "PostgresServer", "PostgresUnavailable", "database_name_for",
           "find_bindir"]

ENV_BIN = "ACTBENCH_PG_BIN"
USER = "actbench"
DATABASE = "actbench"

# What `pg_ctl stop -m MODE` sends the postmaster.
_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_names = itertools.count()

_SETTINGS = """
# tests/postgres_server.py
listen_addresses = '127.0.0.1'
unix_socket_directories = '{socket_dir}'
max_connections = 100
shared_buffers = 16MB
fsync = on
synchronous_commit = on
full_page_writes = on
recovery_init_sync_method = syncfs
huge_pages = off
max_wal_size = 256MB
timezone = 'UTC'
log_timezone = 'UTC'
lc_messages = 'C'
logging_collector = off
log_line_prefix = '%m [%p] %d '
"""

_HBA = """\
# tests/postgres_server.py: trust, on the loopback address and the private socket directory only
local all all trust
host all all 127.0.0.1/32 trust
"""


class PostgresUnavailable(RuntimeError):
  """No PostgreSQL server can be started here; the message says why."""


def find_bindir() -> str:
  """The directory of the server's binaries (initdb, postgres)."""
  explicit = os.environ.get(ENV_BIN)
  if explicit:
    # An explicit choice that does not work is an error, not a reason to pick another install.
    if _has_server(explicit):
      return explicit
    raise PostgresUnavailable(f"{ENV_BIN}={explicit} holds no initdb and postgres executables")
  candidates = []
  with contextlib.suppress(OSError, subprocess.SubprocessError):
    candidates.append(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                     timeout=30, check=True).stdout.strip())
  for name in ("initdb", "postgres"):
    found = shutil.which(name)
    if found:  # a symlink in /usr/local/bin: postgres sits beside the real initdb
      candidates.append(os.path.dirname(os.path.realpath(found)))
  for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin"):
    candidates += sorted(glob.glob(pattern), key=_version_key, reverse=True)
  candidates.append("/usr/local/pgsql/bin")
  for candidate in candidates:
    if candidate and _has_server(candidate):
      return candidate
  raise PostgresUnavailable(
      "no PostgreSQL server binaries (initdb and postgres) found: tried `pg_config --bindir`, "
      f"PATH, /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin and /usr/local/pgsql/bin; install the "
      f"server (Debian: apt-get install postgresql) or set {ENV_BIN}")


def database_name_for(label: str) -> str:
  """A database name unique in this process, readable after `label` (a test's name)."""
  prefix = f"t{next(_names)}_"
  return prefix + re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:63 - len(prefix)]


class PostgresServer:
  """One PostgreSQL server: initdb on the first `start`, then as many stops and starts as the
  tests want, on the same port and data directory, until `cleanup` deletes it all.

  Thread-safe: `restart_after` starts it again from another thread.
  """

  def __init__(self, bindir: str | None = None, *, port: int | None = None,
               parent_dir: str | None = None, start_timeout: float = 60.0):
    self.bindir = bindir or find_bindir()
    self.start_timeout = start_timeout
    self._account = _server_account()
    self._parent_dir = parent_dir
    self._choose_port = port is None
    self._port = port
    self._lock = threading.RLock()
    self._res = _Resources()
    self._finalizer = weakref.finalize(self, _release, self._res)
    self._database_ready = False
    self.version = _run([os.path.join(self.bindir, "postgres"), "--version"]).strip()

  # ---- where it is

  @property
  def directory(self) -> str | None:
    """The temporary directory: data/, socket/ and server.log; None before the first start."""
    return self._res.directory

  @property
  def port(self) -> int | None:
    return self._port

  @property
  def url(self) -> str:
    """postgresql://actbench@127.0.0.1:PORT/actbench"""
    return self.url_for(DATABASE)

  def url_for(self, database: str) -> str:
    if self._port is None:
      raise RuntimeError("the server has not been started: it has no port yet")
    return f"postgresql://{USER}@127.0.0.1:{self._port}/{database}"

  @property
  def running(self) -> bool:
    proc = self._res.proc
    return proc is not None and proc.poll() is None

  @property
  def pid(self) -> int | None:
    """The postmaster's process id while it runs (its backends are its children)."""
    return self._res.proc.pid if self.running else None

  @property
  def log_path(self) -> str | None:
    return None if self.directory is None else os.path.join(self.directory, "server.log")

  def log_size(self) -> int:
    """The server log's length now: `log_since(size)` reads what is logged after it."""
    if self.log_path is None or not os.path.exists(self.log_path):
      return 0
    return os.path.getsize(self.log_path)

  def log_since(self, offset: int) -> str:
    if self.log_path is None or not os.path.exists(self.log_path):
      return ""
    with open(self.log_path, "rb") as log:
      log.seek(offset)
      return log.read().decode("utf-8", "replace")

  def log_tail(self, chars: int = 3000) -> str:
    return self.log_since(max(0, self.log_size() - chars))

  # ---- life cycle

  def start(self) -> str:
    """Starts the server (initdb first, once) and waits until it takes connections; returns
    `url`. Does nothing to a running server. Raises PostgresUnavailable when it cannot start."""
    with self._lock:
      if not self._finalizer.alive:
        raise RuntimeError("the server was cleaned up: make a new PostgresServer")
      if not self.running:
        if self.directory is None:
          self._initdb()
        for attempt in itertools.count():
          if self._port is None:
            self._port = _free_port()
          try:
            self._launch()
            break
          except _PortTaken:
            # Another process took the port between our probe and the server's bind: only the
            # first start may move to another one (clients hold the URL after that).
            if not self._choose_port or self._database_ready or attempt >= 4:
              raise PostgresUnavailable(
                  f"port {self._port} is taken:\n{self.log_tail()}") from None
            self._port = None
      if not self._database_ready:
        self._execute(f"CREATE DATABASE {DATABASE}")
        self._database_ready = True
      return self.url

  def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
    """Stops the server as `pg_ctl stop -m MODE` would: "fast" rolls back open transactions and
    checkpoints; "immediate" is a crash (no checkpoint: the next start replays the WAL);
    "smart" waits for the clients to leave. A server that takes longer than `timeout` is shut
    down immediately, and one that ignores that, killed."""
    if mode not in _SIGNALS:
      raise ValueError(f"mode must be one of {sorted(_SIGNALS)}, not {mode!r}")
    with self._lock:
      _stop(self._res, _SIGNALS[mode], timeout)

  def restart_after(self, seconds: float, mode: str = "immediate") -> Restart:
    """Stops the server now and starts it again `seconds` later, from a thread, so that the
    test can watch its clients meanwhile; `.wait()` on the answer for the server to be back."""
    self.stop(mode)
    restart = Restart(self, seconds)
    restart.start()
    return restart

  def cleanup(self) -> None:
    """Stops the server and deletes its directory; the object is of no further use."""
    with self._lock:
      self._finalizer()

  def __enter__(self) -> PostgresServer:
    try:
      self.start()
    except BaseException:
      self.cleanup()
      raise
    return self

  def __exit__(self, *exc_info) -> None:
    self.cleanup()

  # ---- databases

  def new_database(self, name: str | None = None) -> str:
    """Creates an empty database (dropping one of that name first, its sessions with it) and
    returns its URL. Names are lower-case identifiers: [a-z_][a-z0-9_]*, at most 63 chars."""
    name = name or database_name_for("db")
    _check_name(name)
    self.drop_database(name)
    self._execute(f"CREATE DATABASE {name}")
    return self.url_for(name)

  def drop_database(self, name: str) -> None:
    """Drops the database if it exists, ending whatever sessions are still connected to it."""
    _check_name(name)
    self._execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

  def _execute(self, statement: str) -> None:
    import psycopg  # only the tests that use a server need psycopg
    if not self.running:
      raise RuntimeError(f"the server is not running, cannot: {statement}")
    with psycopg.connect(self.url_for("postgres"), autocommit=True, connect_timeout=30) as conn:
      conn.execute(statement)

  # ---- the work

  def _initdb(self) -> None:
    parent = self._parent_dir or _reachable_tmp(self._account)
    directory = tempfile.mkdtemp(prefix="actbench-pg-", dir=parent)
    self._res.directory = directory
    socket_dir = os.path.join(directory, "socket")
    os.mkdir(socket_dir, 0o700)
    if self._account is not None:
      for path in (directory, socket_dir):
        os.chown(path, self._account.pw_uid, self._account.pw_gid)
    data = os.path.join(directory, "data")
    # --no-sync: a crash of the server, unlike one of the machine, loses nothing that sits in
    # the OS page cache; what the server commits later it fsyncs itself.
    _run([os.path.join(self.bindir, "initdb"), "-D", data, "-U", USER, "--auth=trust",
          "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"],
         account=self._account, cwd=directory, what="initdb")
    with open(os.path.join(data, "postgresql.conf"), "a", encoding="utf-8") as conf:
      conf.write(_SETTINGS.format(socket_dir=socket_dir))
    with open(os.path.join(data, "pg_hba.conf"), "w", encoding="utf-8") as hba:
      hba.write(_HBA)

  def _launch(self) -> None:
    data = os.path.join(self.directory, "data")
    log_start = self.log_size()
    with open(self.log_path, "ab") as log:
      try:
        # The same process group as the tests: a Ctrl-C that ends them stops it too.
        self._res.proc = subprocess.Popen(
            [os.path.join(self.bindir, "postgres"), "-D", data, "-p", str(self._port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory,
            env=_server_env(self.directory), **_as_account(self._account))
      except OSError as error:
        raise PostgresUnavailable(f"cannot run postgres: {error}") from error
    proc = self._res.proc
    deadline = time.monotonic() + self.start_timeout
    while not _ready(data, proc.pid):
      if proc.poll() is not None:
        self._res.proc = None
        output = self.log_since(log_start)
        if "could not bind" in output or "could not create any TCP/IP sockets" in output:
          raise _PortTaken()
        raise PostgresUnavailable(
            f"postgres exited with status {proc.returncode} at start:\n{output[-3000:]}")
      if time.monotonic() > deadline:
        _stop(self._res, signal.SIGQUIT, 10.0)
        raise PostgresUnavailable(
            f"postgres took over {self.start_timeout:.0f} s to start:\n{self.log_tail()}")
      time.sleep(0.02)


class Restart(threading.Thread):
  """The thread of `PostgresServer.restart_after`."""

  def __init__(self, server: PostgresServer, seconds: float):
    super().__init__(daemon=True, name="postgres-restart")
    self._server = server
    self._seconds = seconds
    self.error: BaseException | None = None

  def run(self) -> None:
    try:
      time.sleep(self._seconds)
      self._server.start()
    except BaseException as error:  # handed to the test by wait()
      self.error = error

  def wait(self, timeout: float | None = None) -> None:
    """Waits until the server is back, raising what stopped it from coming back."""
    self.join(timeout)
    if self.is_alive():
      raise TimeoutError(f"the server is not back after {timeout} s")
    if self.error is not None:
      raise self.error


class _PortTaken(Exception):
  pass


class _Resources:
  """What the finalizer releases: it must not hold the server object itself."""

  def __init__(self):
    self.directory: str | None = None
    self.proc: subprocess.Popen | None = None


def _release(res: _Resources) -> None:
  _stop(res, signal.SIGINT, 30.0)
  if res.directory is not None:
    shutil.rmtree(res.directory, ignore_errors=True)
    res.directory = None


def _stop(res: _Resources, signum: int, timeout: float) -> None:
  proc, res.proc = res.proc, None
  if proc is None or proc.poll() is not None:
    return
  proc.send_signal(signum)
  try:
    proc.wait(timeout)
  except subprocess.TimeoutExpired:
    proc.send_signal(signal.SIGQUIT)
    try:
      proc.wait(10.0)
    except subprocess.TimeoutExpired:
      proc.kill()  # its children, left behind, exit when they notice the postmaster is gone
      proc.wait()


def _ready(data: str, pid: int) -> bool:
  """Whether postmaster.pid says that this postmaster takes connections (what pg_ctl -w reads:
  the 8th line turns to "ready" once recovery is over and the sockets listen)."""
  try:
    with open(os.path.join(data, "postmaster.pid"), encoding="utf-8") as pidfile:
      lines = pidfile.read().splitlines()
  except OSError:
    return False
  return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"


def _free_port() -> int:
  """A free port below the ephemeral range: a client's outgoing connection cannot take it
  while the server is down for a restart, as it could take one the kernel hands out."""
  try:
    with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="utf-8") as ports:
      low = int(ports.read().split()[0])
  except (OSError, ValueError, IndexError):
    low = 32768
  for _ in range(50):
    port = random.randrange(10000, low) if low > 11000 else 0
    with socket.socket() as probe:
      try:
        probe.bind(("127.0.0.1", port))
      except OSError:
        continue
      return probe.getsockname()[1]
  raise PostgresUnavailable("found no free TCP port on 127.0.0.1")


def _server_account() -> pwd.struct_passwd | None:
  """The account to run the server under, or None for our own: PostgreSQL refuses root."""
  if os.geteuid() != 0:
    return None
  for name in ("postgres", "nobody"):
    try:
      account = pwd.getpwnam(name)
    except KeyError:
      continue
    if account.pw_uid != 0:
      return account
  raise PostgresUnavailable("running as root, and there is no postgres or nobody user to run "
                            "the server as (PostgreSQL refuses to run as root)")


def _as_account(account: pwd.struct_passwd | None) -> dict:
  if account is None:
    return {}
  # extra_groups=[]: root's supplementary groups would otherwise stay with the server.
  return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _reachable_tmp(account: pwd.struct_passwd | None) -> str:
  """A temporary directory the server's account can reach: TMPDIR unless it lies under a
  directory closed to that account (/root, pytest's /tmp/pytest-of-root)."""
  candidates = [tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"]
  for candidate in candidates:
    if os.path.isdir(candidate) and (account is None or _searchable(candidate, account)):
      return candidate
  raise PostgresUnavailable(f"none of {candidates} can be reached by the user "
                            f"{account.pw_name}, whom the server runs as")


def _searchable(path: str, account: pwd.struct_passwd) -> bool:
  path = os.path.realpath(path)
  while True:
    st = os.stat(path)
    if st.st_uid == account.pw_uid:
      bit = stat.S_IXUSR
    elif st.st_gid == account.pw_gid:
      bit = stat.S_IXGRP
    else:
      bit = stat.S_IXOTH
    if not st.st_mode & bit:
      return False
    parent = os.path.dirname(path)
    if parent == path:
      return True
    path = parent


def _server_env(home: str) -> dict:
  # PG* variables of the caller's (PGDATA, PGPORT, ...) are not for this server.
  env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
  env.update(HOME=home, LC_ALL="C", LANG="C", TZ="UTC")
  return env


def _run(command: list[str], account: pwd.struct_passwd | None = None, cwd: str | None = None,
         what: str | None = None) -> str:
  try:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=_server_env(cwd or "/"), **_as_account(account))
  except (OSError, subprocess.SubprocessError) as error:
    raise PostgresUnavailable(f"cannot run {what or command[0]}: {error}") from error
  if done.returncode != 0:
    raise PostgresUnavailable(f"{what or command[0]} failed (status {done.returncode}):\n"
                              f"{done.stdout[-2000:]}{done.stderr[-3000:]}")
  return done.stdout


def _has_server(bindir: str) -> bool:
  return all(os.access(os.path.join(bindir, name), os.X_OK) for name in ("initdb", "postgres"))


def _version_key(path: str) -> tuple[int, ...]:
  return tuple(int(number) for number in re.findall(r"\d+", path))


def _check_name(name: str) -> None:
  if not _NAME.fullmatch(name):
    raise ValueError(f"database names here are [a-z_][a-z0-9_]*, at most 63 characters: {name!r}")
