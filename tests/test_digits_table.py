"""Act-Bench-Digits, the table shipped with actbench: contents, and a slice of it as the
replay fixture (the surrogate must beat random search on real training results)."""

import numpy as np
import pytest

from actbench import tables
from actbench.expr import space
from actbench.search import replay
from actbench.search.strategies import Candidates


@pytest.fixture(scope="module")
def table(tmp_path_factory):
  return tables.load("digits", cache_dir=tmp_path_factory.mktemp("cache"))


def test_the_shipped_table_is_the_benchmark_space(table):
  assert len(table) == 2791  # every class of binary(unary(x),unary(x)) plus the baselines
  names = set(space.enumerate(space.BENCHMARK_SCHEMA))
  members = {name for members in table.classes() for name in members}
  assert names <= members
  validation = table.accuracy("validation")
  failed = table.metrics["Diverged"] == 1
  assert np.isnan(validation[failed]).all() and np.isfinite(validation[~failed]).all()
  assert validation[table.index("relu(x)")] == pytest.approx(0.9)
  assert validation[table.index("add(relu(x),zero(x))")] == pytest.approx(0.9)  # same class
  assert np.nanmax(validation) > validation[table.index("relu(x)")] + 0.04  # not at the ceiling
  assert table.fisher.shape == (2791, 378)
  assert np.isfinite(table.fisher[~failed]).mean() > 0.95


def test_replay_on_a_slice_finds_good_functions_sooner_than_random(table):
  rows = np.arange(0, len(table), 5)  # 559 functions, every fifth
  part = table.subset(rows)
  candidates = Candidates.from_table(part, schema=space.BENCHMARK_SCHEMA)
  result = replay.replay(candidates, part.accuracy("validation"), ("aquasurf", "random"),
                         seeds=range(5), budget=len(part), feature_set="outputs")
  summary = result.summary()
  assert summary["aquasurf"]["evaluations_to_top1"]["reached"] == 1.0
  assert (summary["aquasurf"]["evaluations_to_top1"]["median"]
          < summary["random"]["evaluations_to_top1"]["median"])
