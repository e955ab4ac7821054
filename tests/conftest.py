"""Shared test settings: hypothesis profiles sized for a 2-core CI machine, and a persistent
XLA compilation cache for the session, so that tests (and their subprocesses) that build the
same programs compile them once."""

import os
import shutil
import tempfile
import urllib.parse
import urllib.request

import hypothesis
import pytest

_CACHE = tempfile.mkdtemp(prefix="actbench-test-jax-cache-")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

hypothesis.settings.register_profile("ci", max_examples=150, deadline=None)
hypothesis.settings.register_profile("dev", max_examples=50, deadline=None)
hypothesis.settings.load_profile("ci")


_LOCAL = ("", "127.0.0.1", "localhost")


@pytest.fixture(autouse=True)
def local_network_only(monkeypatch):
  """No test may use the network: local files and servers on this machine only."""
  urlopen = urllib.request.urlopen

  def local_only(url, *args, **kwargs):
    address = url.full_url if isinstance(url, urllib.request.Request) else url
    host = urllib.parse.urlsplit(address).hostname or ""
    if host not in _LOCAL:
      raise AssertionError(f"a test tried to reach the network: {address}")
    return urlopen(url, *args, **kwargs)

  monkeypatch.setattr(urllib.request, "urlopen", local_only)


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
  """A TFDS data_dir with tiny prepared cifar10 and imagenette/160px (tests/tfds_fixtures.py)."""
  from tests import tfds_fixtures  # imports TFDS: only for the tests that ask
  return tfds_fixtures.prepare_tiny_datasets(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def smoke_tfds_dir(tmp_path_factory):
  """A TFDS data_dir with what the configs' `:smoke` variants read: tiny cifar10, cifar100,
  imagenette/160px and imagenet2012 (tests/tfds_fixtures.py)."""
  from tests import tfds_fixtures  # imports TFDS: only for the tests that ask
  return tfds_fixtures.prepare_smoke_datasets(tmp_path_factory.mktemp("smoke_tfds"))


_REQUIRE_POSTGRES = "ACTBENCH_REQUIRE_POSTGRES"


def _postgres_unavailable(reason):
  """Skips the test, or fails it where ACTBENCH_REQUIRE_POSTGRES=1 (CI): a CI machine on which
  the PostgreSQL tests quietly skip would pass without testing the shared store."""
  if os.environ.get(_REQUIRE_POSTGRES, "") not in ("", "0"):
    pytest.fail(f"no PostgreSQL server, and {_REQUIRE_POSTGRES}=1: {reason}", pytrace=False)
  pytest.skip(f"no PostgreSQL server: {reason}")


@pytest.fixture(scope="session")
def postgres_server():
  """A real PostgreSQL server for the session (tests/postgres_server.py), started on first use.
  A test that stops it starts it again, or asks for postgres_url, which does."""
  try:
    import psycopg  # noqa: F401  (the store's client: without it there is nothing to test)
  except ImportError as error:
    _postgres_unavailable(f"psycopg is not installed ({error})")
  from tests.postgres_server import PostgresServer, PostgresUnavailable
  try:
    server = PostgresServer()
  except PostgresUnavailable as error:
    _postgres_unavailable(str(error))
  try:
    server.start()
  except PostgresUnavailable as error:
    server.cleanup()
    _postgres_unavailable(str(error))
  yield server
  server.cleanup()


@pytest.fixture
def postgres_url(postgres_server, request):
  """The URL of a fresh, empty database on the session's server, dropped after the test (its
  remaining sessions ended with it)."""
  from tests.postgres_server import database_name_for
  postgres_server.start()  # a test before this one may have left it stopped
  name = database_name_for(request.node.name)
  url = postgres_server.new_database(name)
  yield url
  if postgres_server.running:
    postgres_server.drop_database(name)


def pytest_addoption(parser):
  parser.addoption("--runslow", action="store_true", default=False,
                   help="also run the tests marked extended (minutes of XLA:CPU compiles that "
                        "repeat what faster tests already cover)")


def pytest_configure(config):
  config.addinivalue_line("markers", "extended: skipped unless --runslow is given")
  config.addinivalue_line("markers", "slow: a test of more than about 10 s on 2 cores; the fast "
                          "loop leaves them out (-m 'not slow'), CI runs them")


def pytest_unconfigure(config):
  # The session's compilation cache is of no use after it: one left behind per run of the suite
  # filled /tmp.
  shutil.rmtree(_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
  if config.getoption("--runslow"):
    return
  skip = pytest.mark.skip(reason="extended: run with --runslow")
  for item in items:
    if "extended" in item.keywords:
      item.add_marker(skip)
