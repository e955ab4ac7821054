"""The surrogate: UMAP embeddings of the candidates and k-NN regression on them."""

from __future__ import annotations

import numpy as np
import pytest

from actbench.expr import features
from actbench.search import surrogate
from actbench.search.strategies import Candidates

N = 300


def _manifold(n: int = N, seed: int = 0):
  """Candidates on a 2-parameter family, a * tanh(b * x), and an accuracy smooth in (a, b).

  Fisher features are two CDF blocks, one per parameter, so every feature set sees the
  parameters."""
  rng = np.random.default_rng(seed)
  a, b = rng.random(n), rng.random(n)
  x = features.reference_points()
  outputs = ((0.5 + a)[:, None] * np.tanh((0.5 + 3 * b)[:, None] * x)).astype(np.float32)
  grid = np.linspace(0, 1, 10)
  fisher = np.concatenate([1 / (1 + np.exp(-(grid - a[:, None]) / 0.15)),
                           1 / (1 + np.exp(-(grid - b[:, None]) / 0.15))], axis=1)
  accuracy = 0.5 + 0.2 * np.sin(3 * a) + 0.2 * b
  candidates = Candidates([[f"f{i}"] for i in range(n)], outputs, fisher.astype(np.float32),
                          baselines=())
  return candidates, accuracy


@pytest.fixture(scope="module")
def problem():
  return _manifold()


@pytest.fixture(scope="module")
def embeddings(problem):
  """One UMAP layout per set (random_state 42), and the union again with 43."""
  candidates, _ = problem
  result = {name: surrogate.embed(candidates, name) for name in surrogate.FEATURE_SETS}
  result["union43"] = surrogate.embed(candidates, "union", random_state=43)
  return result


@pytest.fixture(scope="module")
def holey():
  """Candidates with a non-finite output row (3) and missing Fisher rows (5, 7)."""
  candidates, accuracy = _manifold(60, seed=1)
  candidates.outputs[3, 10] = np.inf
  candidates.fisher[[5, 7]] = np.nan
  return candidates, accuracy


def test_spearman_above_0_8_with_100_training_points(problem, embeddings):
  _, accuracy = problem
  for name in surrogate.FEATURE_SETS:
    result = surrogate.quality(embeddings[name], accuracy, [100], seeds=range(3))
    assert result["spearman"].shape == (1, 3) and result["kendall"].shape == (1, 3)
    assert result["spearman_median"][0] > 0.8, name
    assert result["kendall_median"][0] > 0.6, name


def test_quality_improves_with_training_points(problem, embeddings):
  _, accuracy = problem
  result = surrogate.quality(embeddings["union"], accuracy, [5, 100], seeds=range(4))
  assert result["spearman_median"][1] > result["spearman_median"][0]
  assert list(result["train_sizes"]) == [5, 100] and list(result["seeds"]) == [0, 1, 2, 3]


def test_quality_rejects_impossible_sizes(problem, embeddings):
  _, accuracy = problem
  with pytest.raises(ValueError, match="train size"):
    surrogate.quality(embeddings["union"], accuracy, [N], seeds=[0])


def test_knn_is_the_mean_of_the_3_nearest():
  rng = np.random.default_rng(3)
  embedding = rng.normal(size=(200, 2))
  history = {int(i): float(rng.random()) for i in rng.choice(200, 25, replace=False)}
  predicted = surrogate.Surrogate(embedding).predict(history)
  ids = np.array(list(history))
  values = np.array(list(history.values()))
  for row in range(200):
    nearest = np.argsort(((embedding[ids] - embedding[row]) ** 2).sum(axis=1))[:3]
    assert predicted[row] == pytest.approx(values[nearest].mean(), abs=1e-12)


def test_k_is_capped_by_history_and_failures_count_as_failure_value():
  embedding = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [9.0, 0.0]])
  model = surrogate.Surrogate(embedding)
  np.testing.assert_allclose(model.predict({0: 0.8, 3: np.nan}), [0.4] * 4)
  np.testing.assert_allclose(model.predict({0: 0.8, 3: np.nan}, failure_value=0.2), [0.5] * 4)
  np.testing.assert_allclose(model.predict({0: 0.8, 3: 0.2}, k=1), [0.8, 0.8, 0.2, 0.2])
  np.testing.assert_allclose(model.predict({}, failure_value=0.1), [0.1] * 4)


def test_ineligible_rows_are_nan(holey):
  candidates, _ = holey
  assert np.flatnonzero(~surrogate.eligible(candidates, "outputs")).tolist() == [3]
  assert np.flatnonzero(~surrogate.eligible(candidates, "fisher")).tolist() == [5, 7]
  for name in ("union", "raw"):
    assert np.flatnonzero(~surrogate.eligible(candidates, name)).tolist() == [3, 5, 7]
    embedding = surrogate.embed(candidates, name)
    assert np.isnan(embedding[[3, 5, 7]]).all()
    assert np.isfinite(np.delete(embedding, [3, 5, 7], axis=0)).all()
    model = surrogate.Surrogate(embedding)
    # An ineligible id in the history has no position: it is left out of the fit.
    predicted = model.predict({3: 0.9, 0: 0.5, 1: 0.6, 2: 0.7})
    assert np.isnan(predicted[[3, 5, 7]]).all()
    np.testing.assert_allclose(np.delete(predicted, [3, 5, 7]), 0.6)


def test_embed_is_deterministic_for_a_random_state(problem, embeddings):
  candidates, _ = problem
  np.testing.assert_array_equal(surrogate.embed(candidates, "union"), embeddings["union"])
  graph = surrogate.fuzzy_graph(candidates, "union")
  np.testing.assert_array_equal(surrogate.embed(candidates, "union", random_state=43,
                                                graph=graph), embeddings["union43"])
  assert not np.allclose(embeddings["union"], embeddings["union43"])
  assert embeddings["union"].shape == (N, 2)


def test_union_differs_from_each_set(embeddings):
  for name in ("outputs", "fisher"):
    assert not np.allclose(embeddings["union"], embeddings[name])


def test_union_graph_is_the_fuzzy_union(problem):
  candidates, _ = problem
  union = surrogate.fuzzy_graph(candidates, "union").toarray()
  outputs = surrogate.fuzzy_graph(candidates, "outputs").toarray()
  fisher = surrogate.fuzzy_graph(candidates, "fisher").toarray()
  # Every edge of either graph is in the union, and nothing else is.
  np.testing.assert_array_equal(union > 0, (outputs > 0) | (fisher > 0))
  np.testing.assert_allclose(union, union.T)


def test_raw_blocks_weigh_the_same(problem, embeddings):
  candidates, _ = problem
  raw = embeddings["raw"]
  assert raw.shape == (N, 1000 + 20)
  for block in (raw[:, :1000], raw[:, 1000:]):
    np.testing.assert_allclose(block.mean(axis=0), 0, atol=1e-9)
    assert (block ** 2).sum(axis=1).mean() == pytest.approx(1.0)
  # Outputs are compressed with a signed log before scaling: the order of values survives.
  first = np.sign(candidates.outputs[:, 0]) * np.log1p(np.abs(candidates.outputs[:, 0]))
  assert np.corrcoef(first, raw[:, 0])[0, 1] == pytest.approx(1.0)


def test_feature_set_errors(problem):
  candidates, _ = problem
  with pytest.raises(ValueError, match="unknown feature set"):
    surrogate.eligible(candidates, "both")
  bare = Candidates(candidates.classes, candidates.outputs, None, baselines=())
  assert bare.fisher.shape == (N, 0)
  with pytest.raises(ValueError, match="Fisher"):
    surrogate.embed(bare, "union")
  assert surrogate.embed(bare, "raw").shape == (N, 1000)
