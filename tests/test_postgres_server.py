"""The test infrastructure for PostgreSQL: a real server that can crash and come back
(tests/postgres_server.py), and the proxy that cuts one client off it (tests/tcp_proxy.py)."""

import os
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from tests.postgres_server import PostgresServer, PostgresUnavailable
from tests.tcp_proxy import TcpProxy

try:
  import psycopg
except ImportError:
  if os.environ.get("ACTBENCH_REQUIRE_POSTGRES", "") not in ("", "0"):
    raise  # CI: the PostgreSQL tests must run
  pytest.skip("psycopg is not installed", allow_module_level=True)

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rows(url, query="SELECT x FROM t ORDER BY x"):
  with psycopg.connect(url, connect_timeout=10) as conn:
    return [row[0] for row in conn.execute(query).fetchall()]


def _eventually(predicate, timeout=10.0):
  deadline = time.monotonic() + timeout
  while not predicate():
    if time.monotonic() > deadline:
      return False
    time.sleep(0.05)
  return True


def test_server_answers_select_1(postgres_server, postgres_url):
  assert _rows(postgres_url, "SELECT 1") == [1]
  assert postgres_server.url == f"postgresql://actbench@127.0.0.1:{postgres_server.port}/actbench"
  assert _rows(postgres_server.url, "SELECT current_user || '/' || current_database()") == [
      "actbench/actbench"]
  assert _rows(postgres_url, "SHOW fsync") == ["on"]
  if os.geteuid() == 0:  # PostgreSQL refuses root: it runs as postgres (or nobody)
    assert os.stat(os.path.join(postgres_server.directory, "data")).st_uid != 0


def test_new_database_is_fresh_and_separate(postgres_server):
  first = postgres_server.new_database("t_infra_first")
  second = postgres_server.new_database("t_infra_second")
  try:
    with psycopg.connect(first) as conn:
      conn.execute("CREATE TABLE t (x int)")
      conn.execute("INSERT INTO t VALUES (1)")
    assert _rows(first) == [1]
    assert _rows(second, "SELECT count(*) FROM pg_tables WHERE tablename = 't'") == [0]
    with psycopg.connect(first) as held:  # a session still open does not keep it alive
      postgres_server.new_database("t_infra_first")
      with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")
    assert _rows(first, "SELECT count(*) FROM pg_tables WHERE tablename = 't'") == [0]
  finally:
    postgres_server.drop_database("t_infra_first")
    postgres_server.drop_database("t_infra_second")
  with pytest.raises(ValueError):
    postgres_server.new_database("Robert'); DROP TABLE students;--")


def test_immediate_stop_is_a_crash_that_keeps_what_was_committed(postgres_server, postgres_url):
  with psycopg.connect(postgres_url) as conn:
    conn.execute("CREATE TABLE t (x int)")
    conn.execute("INSERT INTO t VALUES (1), (2)")
  open_tx = psycopg.connect(postgres_url)
  open_tx.execute("INSERT INTO t VALUES (3)")  # never committed
  log_start = postgres_server.log_size()
  try:
    postgres_server.stop(mode="immediate")
    assert not postgres_server.running
    with pytest.raises(psycopg.OperationalError):
      open_tx.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
      psycopg.connect(postgres_url, connect_timeout=5)
  finally:
    open_tx.close()
    postgres_server.start()
  assert _rows(postgres_url) == [1, 2]
  # A crash, not a shutdown: the start replayed the WAL.
  assert "automatic recovery in progress" in postgres_server.log_since(log_start)


def test_restart_after_brings_the_server_back_on_the_same_port(postgres_server, postgres_url):
  port = postgres_server.port
  restart = postgres_server.restart_after(1.0)
  with pytest.raises(psycopg.OperationalError):
    psycopg.connect(postgres_url, connect_timeout=5)
  restart.wait(60)
  assert postgres_server.running and postgres_server.port == port
  assert _rows(postgres_url, "SELECT 1") == [1]


def test_proxy_url_for_keeps_all_but_host_and_port():
  with TcpProxy("127.0.0.1", 1) as proxy:
    assert proxy.url_for("postgresql://actbench@127.0.0.1:5432/t_1?application_name=w") == (
        f"postgresql://actbench@127.0.0.1:{proxy.port}/t_1?application_name=w")
    assert proxy.url_for("postgresql://db.example:5432/x") == (
        f"postgresql://127.0.0.1:{proxy.port}/x")


def test_proxy_cut_drops_its_clients_alone_and_restore_lets_them_back(postgres_server,
                                                                      postgres_url):
  with TcpProxy("127.0.0.1", postgres_server.port) as proxy:
    proxied = proxy.url_for(postgres_url)
    assert proxied != postgres_url
    with psycopg.connect(proxied, autocommit=True) as cut_off, \
         psycopg.connect(postgres_url, autocommit=True) as bystander:
      assert cut_off.execute("SELECT 7").fetchone() == (7,)
      assert proxy.connections == 1
      proxy.cut()
      with pytest.raises(psycopg.OperationalError):
        cut_off.execute("SELECT 1")
      started = time.monotonic()
      with pytest.raises(psycopg.OperationalError):
        psycopg.connect(proxied, connect_timeout=10)
      assert time.monotonic() - started < 5  # refused at once, not left to time out
      assert bystander.execute("SELECT 8").fetchone() == (8,)
      proxy.restore()
      assert _rows(proxied, "SELECT 9") == [9]
    # The server's side of the cut connection ends too (backends exit soon after their
    # client's socket closes): only the counting session is left.
    assert _eventually(lambda: _rows(postgres_url, "SELECT count(*) FROM pg_stat_activity "
                                                   "WHERE datname = current_database()") == [1])
  assert proxy.connections == 0


def _ssl_request():
  return struct.pack("!ii", 8, 80877103)  # the server answers one byte, b"N" here (no SSL)


def test_proxy_hang_holds_traffic_that_restore_delivers(postgres_server, postgres_url):
  with TcpProxy("127.0.0.1", postgres_server.port) as proxy:
    proxied = proxy.url_for(postgres_url)
    conn = psycopg.connect(proxied, autocommit=True)
    try:
      proxy.hang()
      answers = []
      query = threading.Thread(
          target=lambda: answers.append(conn.execute("SELECT 42").fetchone()), daemon=True)
      query.start()
      with socket.create_connection(("127.0.0.1", proxy.port), timeout=0.3) as fresh:
        fresh.sendall(_ssl_request())
        with pytest.raises(TimeoutError):  # accepted, but the server never hears of it
          fresh.recv(1)
        query.join(0.3)
        assert query.is_alive() and not answers
        proxy.restore()
        fresh.settimeout(10)
        assert fresh.recv(1) == b"N"
      query.join(10)
      assert answers == [(42,)]
      proxy.hang()
      proxy.cut()  # a cut ends the hung connections too
      with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    finally:
      conn.close()


def test_without_binaries_the_tests_skip_or_under_require_fail(tmp_path, monkeypatch):
  from tests.conftest import _postgres_unavailable
  monkeypatch.setenv("ACTBENCH_PG_BIN", str(tmp_path))  # no binaries there
  with pytest.raises(PostgresUnavailable, match="ACTBENCH_PG_BIN"):
    PostgresServer()
  monkeypatch.delenv("ACTBENCH_REQUIRE_POSTGRES", raising=False)
  with pytest.raises(pytest.skip.Exception, match="the reason"):
    _postgres_unavailable("the reason")
  monkeypatch.setenv("ACTBENCH_REQUIRE_POSTGRES", "1")
  with pytest.raises(pytest.fail.Exception, match="the reason"):
    _postgres_unavailable("the reason")


def test_under_require_a_missing_server_is_an_error_not_a_skip(tmp_path):
  # The whole chain as CI meets it: the fixture, in a pytest of its own.
  env = dict(os.environ, ACTBENCH_PG_BIN=str(tmp_path), ACTBENCH_REQUIRE_POSTGRES="1")
  run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        f"{__file__}::test_server_answers_select_1"],
                       cwd=_ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert run.returncode != 0 and "1 error" in run.stdout, run.stdout + run.stderr
  assert "ACTBENCH_PG_BIN" in run.stdout  # the reason is in the report
