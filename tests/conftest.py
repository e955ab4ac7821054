"""Shared test settings: hypothesis profiles sized for a 2-core CI machine, and a persistent
XLA compilation cache for the session, so that tests (and their subprocesses) that build the
same programs compile them once."""

import os
import tempfile

import hypothesis
import pytest

_CACHE = tempfile.mkdtemp(prefix="actbench-test-jax-cache-")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

hypothesis.settings.register_profile("ci", max_examples=150, deadline=None)
hypothesis.settings.register_profile("dev", max_examples=50, deadline=None)
hypothesis.settings.load_profile("ci")


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
  """A TFDS data_dir with tiny prepared cifar10 and imagenette/160px (tests/tfds_fixtures.py)."""
  from tests import tfds_fixtures  # imports TFDS: only for the tests that ask
  return tfds_fixtures.prepare_tiny_datasets(tmp_path_factory.mktemp("tfds"))
