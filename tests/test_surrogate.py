"""The surrogate: UMAP embeddings of the candidates and k-NN regression on them."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import spatial

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
  # Nothing but edges of either graph; umap-learn's local connectivity reset after the union
  # may round a few of the weakest to 0 (the weights themselves are checked against
  # umap-learn's own union in test_union_graph_is_umap_learns_union).
  either = (outputs > 0) | (fisher > 0)
  assert not ((union > 0) & ~either).any()
  assert (union > 0).sum() >= 0.99 * either.sum()
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


# ---------------------------------------------------------------------------------------------
# The graphs against umap-learn called directly


def _exact_neighbors(data, n_neighbors, metric):
  """The k nearest neighbours of every row by brute force: SciPy's distance matrix in float64
  (computed directly, each point at exactly 0 from itself), each row's k smallest in order."""
  distances = spatial.distance.cdist(data, data, {"euclidean": "euclidean",
                                                  "manhattan": "cityblock"}[metric])
  indices = np.argsort(distances, axis=1, kind="stable")[:, :n_neighbors]
  assert (indices[:, 0] == np.arange(len(data))).all()  # no duplicate rows
  return indices.astype(np.int32), np.take_along_axis(distances, indices, 1).astype(np.float32)


def _umap(data, n_neighbors, metric):
  """umap-learn fitted on `data` with the settings METHOD.md section 4 gives a feature block and
  UMAP's defaults otherwise; transform_mode='graph' stops it after the fuzzy simplicial set
  (`graph_`), before a layout.

  The neighbours are exact and passed in (`precomputed_knn`), as UMAP.fit finds them itself
  below 4,096 points (a full distance matrix, each row's k smallest): the same graph, without
  the 15 s numba compilation of umap-learn's own search."""
  import umap  # pylint: disable=import-outside-toplevel
  data = np.asarray(data, np.float64)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # umap-learn's notices about parallelism
    return umap.UMAP(n_neighbors=n_neighbors, metric=metric, transform_mode="graph",
                     precomputed_knn=_exact_neighbors(data, n_neighbors, metric)).fit(data)


def _umap_union(outputs_model, fisher_model):
  """The union graph as UMAP.__add__ builds it for `outputs_model + fisher_model`: umap-learn's
  fuzzy union (a + b - a * b per edge, an edge missing from one graph counting as half that
  graph's smallest weight), then its local connectivity reset. (`__add__` goes on to lay the
  union out, which prunes the weak edges of its `graph_` in place.)"""
  from umap import umap_  # pylint: disable=import-outside-toplevel
  union = umap_.general_simplicial_set_union(outputs_model.graph_, fisher_model.graph_)
  return umap_.reset_local_connectivity(union, True)


def _assert_same_graph(actual, expected):
  """Same edges, same weights to float32 rounding, entry by entry."""
  actual, expected = actual.toarray(), expected.toarray()
  assert actual.shape == expected.shape
  np.testing.assert_array_equal(actual != 0, expected != 0)
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def umap_models(problem):
  """umap-learn's models of the problem's output (euclidean, 15) and Fisher (manhattan, 3)
  features."""
  candidates, _ = problem
  return {"outputs": _umap(candidates.outputs, 15, "euclidean"),
          "fisher": _umap(candidates.fisher, 3, "manhattan")}


def test_output_graph_is_umap_learns(problem, umap_models):
  candidates, _ = problem
  _assert_same_graph(surrogate.fuzzy_graph(candidates, "outputs"),
                     umap_models["outputs"].graph_)


def test_fisher_graph_is_umap_learns(problem, umap_models):
  candidates, _ = problem
  _assert_same_graph(surrogate.fuzzy_graph(candidates, "fisher"), umap_models["fisher"].graph_)


def test_union_graph_is_umap_learns_union(problem, umap_models):
  candidates, _ = problem
  expected = _umap_union(umap_models["outputs"], umap_models["fisher"])
  # The reference is what UMAP.__add__ itself builds: its graph_ is the same but for the weak
  # edges its layout pruned (below 1/500 of the largest weight, 500 epochs below 10,000 points).
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    added = (umap_models["outputs"] + umap_models["fisher"]).graph_.toarray()
  dense = expected.toarray()
  np.testing.assert_array_equal(added, np.where(dense >= dense.max() / 500, dense, 0))
  _assert_same_graph(surrogate.fuzzy_graph(candidates, "union"), expected)


def test_graphs_cover_the_eligible_rows_in_order(holey):
  candidates, _ = holey
  keep = np.delete(np.arange(len(candidates.outputs)), [3, 5, 7])
  outputs = _umap(candidates.outputs[keep], 15, "euclidean")
  fisher = _umap(candidates.fisher[keep], 3, "manhattan")
  _assert_same_graph(surrogate.fuzzy_graph(candidates, "union"), _umap_union(outputs, fisher))
  fisher = _umap(np.delete(candidates.fisher, [5, 7], axis=0), 3, "manhattan")
  _assert_same_graph(surrogate.fuzzy_graph(candidates, "fisher"), fisher.graph_)
