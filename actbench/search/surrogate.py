"""The AQuaSurF surrogate: a UMAP embedding of the candidates and k-NN regression on it.

METHOD.md section 4: the output features (euclidean, 15 neighbours) and the Fisher features
(manhattan, 3 neighbours) each give a fuzzy simplicial set (UMAP's weighted k-NN graph); their
fuzzy union (a + b - a*b per edge) is laid out as ONE 2-D embedding. Validation accuracy is then
regressed on the embedding with k-nearest neighbours (k = 3) over the functions evaluated so far.

Feature sets (`FEATURE_SETS`):
  union    the method above;
  outputs  UMAP of the output features alone (euclidean, 15 neighbours);
  fisher   UMAP of the Fisher features alone (manhattan, 3 neighbours);
  raw      no UMAP: the features themselves (see `raw_features`), for ablations.

Only candidates whose features used by the set are all finite are embedded (`eligible`); the
other rows of an embedding are NaN and the surrogate never predicts them.

The union is built from umap-learn's public pieces rather than by adding two fitted `UMAP`
objects: `a + b` would first lay out each feature set on its own (two wasted optimizations)
and always lays out the union with random_state 42. The steps are those of `UMAP.__add__`:
fuzzy union, local connectivity reset, spectral initialization (random when the union is
not connected), then UMAP's default optimization (500 epochs below 10,000 points). The graphs
do not depend on the random state (exact neighbours), so `fuzzy_graph` computes one that
`embed` reuses for every random state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
import warnings

import numpy as np

if TYPE_CHECKING:
  import scipy.sparse
  from actbench.search.candidates import Candidates

FEATURE_SETS = ("union", "outputs", "fisher", "raw")
DEFAULT_RANDOM_STATE = 42
DEFAULT_K = 3

# (metric, neighbours) per UMAP feature block, METHOD.md section 4.
OUTPUT_METRIC, OUTPUT_NEIGHBORS = "euclidean", 15
FISHER_METRIC, FISHER_NEIGHBORS = "manhattan", 3

# UMAP's defaults (UMAP() with no arguments), used for every layout.
_SPREAD, _MIN_DIST = 1.0, 0.1
_LEARNING_RATE, _REPULSION, _NEGATIVE_SAMPLE_RATE = 1.0, 1.0, 5
COMPONENTS = 2
MIN_POINTS = COMPONENTS + 2  # fewer eligible candidates than this: no UMAP layout


def _check_feature_set(feature_set: str):
  if feature_set not in FEATURE_SETS:
    raise ValueError(f"unknown feature set {feature_set!r}; expected one of {FEATURE_SETS}")


def _blocks(candidates: Candidates, feature_set: str) -> list[tuple[str, np.ndarray]]:
  """The (kind, features) blocks a feature set uses; kind is 'outputs' or 'fisher'."""
  _check_feature_set(feature_set)
  outputs = np.asarray(candidates.outputs)
  fisher = np.asarray(candidates.fisher)
  wants_fisher = feature_set in ("union", "fisher") or (feature_set == "raw"
                                                        and fisher.shape[1] > 0)
  if wants_fisher and fisher.shape[1] == 0:
    raise ValueError(f"feature set {feature_set!r} needs Fisher features, and the candidates "
                     "have none; use feature_set='outputs'")
  blocks = []
  if feature_set in ("union", "outputs", "raw"):
    blocks.append(("outputs", outputs))
  if wants_fisher:
    blocks.append(("fisher", fisher))
  return blocks


def eligible(candidates: Candidates, feature_set: str = "union") -> np.ndarray:
  """Boolean mask (n,): the rows whose features used by `feature_set` are all finite."""
  mask = np.ones(len(candidates.outputs), bool)
  for _, block in _blocks(candidates, feature_set):
    mask &= np.isfinite(block).all(axis=1)
  return mask


def _neighbors(data: np.ndarray, n_neighbors: int, metric: str):
  """Exact k nearest neighbours (each point first, at distance 0), as UMAP.fit computes them
  for small data: from sklearn's pairwise distances, which set each point's distance to itself
  to exactly 0 (a k-NN search's euclidean shortcut |x|^2 - 2xy + |y|^2 leaves rounding there,
  which UMAP would take for the nearest neighbour's distance). Exact search keeps the graph
  deterministic and independent of the seed; chunks keep memory at a few rows of distances."""
  from sklearn.metrics import pairwise_distances_chunked  # pylint: disable=import-outside-toplevel

  def nearest(chunk, start):
    del start
    order = np.argsort(chunk, axis=1, kind="stable")[:, :n_neighbors]
    return order, np.take_along_axis(chunk, order, axis=1)

  parts = list(pairwise_distances_chunked(data, metric=metric, reduce_func=nearest))
  indices = np.concatenate([order for order, _ in parts])
  distances = np.concatenate([dist for _, dist in parts])
  return indices.astype(np.int32), distances.astype(np.float32)


def _block_graph(data: np.ndarray, kind: str) -> scipy.sparse.coo_matrix:
  from umap import umap_  # pylint: disable=import-outside-toplevel
  metric, n_neighbors = ((OUTPUT_METRIC, OUTPUT_NEIGHBORS) if kind == "outputs"
                         else (FISHER_METRIC, FISHER_NEIGHBORS))
  # Fewer points than neighbours: every point is a neighbour of every other.
  n_neighbors = min(n_neighbors, len(data) - 1)
  # float64: outputs reach 1e18 or more, whose squares overflow float32.
  data = np.asarray(data, np.float64)
  indices, distances = _neighbors(data, n_neighbors, metric)
  graph, _, _ = umap_.fuzzy_simplicial_set(
      data, n_neighbors, np.random.RandomState(DEFAULT_RANDOM_STATE), metric,
      knn_indices=indices, knn_dists=distances)
  return graph.tocoo()


def fuzzy_graph(candidates: Candidates,
                feature_set: str = "union") -> scipy.sparse.coo_matrix:
  """UMAP's fuzzy simplicial set over the eligible rows (in row order), for a UMAP set.

  'union' is the fuzzy union of the output and Fisher graphs with local connectivity reset,
  as `UMAP.__add__` builds it.
  """
  if feature_set == "raw":
    raise ValueError("feature set 'raw' has no UMAP graph")
  mask = eligible(candidates, feature_set)
  if mask.sum() < MIN_POINTS:
    raise ValueError(f"UMAP needs at least {MIN_POINTS} candidates with finite "
                     f"features, got {int(mask.sum())}")
  graphs = [_block_graph(block[mask], kind) for kind, block in _blocks(candidates, feature_set)]
  if len(graphs) == 1:
    return graphs[0]
  from umap import umap_  # pylint: disable=import-outside-toplevel
  union = umap_.general_simplicial_set_union(graphs[0], graphs[1])
  return umap_.reset_local_connectivity(union, True).tocoo()


def _layout(graph, data, metric: str, random_state: int) -> np.ndarray:
  from scipy.sparse import csgraph  # pylint: disable=import-outside-toplevel
  from umap import umap_  # pylint: disable=import-outside-toplevel
  a, b = umap_.find_ab_params(_SPREAD, _MIN_DIST)
  connected = csgraph.connected_components(graph)[0] == 1
  # Several components are laid out with the data's centroids (as UMAP.fit does); without data
  # (the union) umap-learn would place them with NumPy's global generator, so the union falls
  # back to a random initialization instead, as UMAP.__add__ does.
  init = "spectral" if connected or data is not None else "random"
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # umap-learn's notices about parallelism and n_jobs
    layout, _ = umap_.simplicial_set_embedding(
        data, graph.copy(),  # it prunes the graph's weak edges in place
        COMPONENTS, _LEARNING_RATE, a, b, _REPULSION, _NEGATIVE_SAMPLE_RATE, None, init,
        np.random.RandomState(random_state), metric, {}, False, {}, False, parallel=False)
  return layout


def compressed_outputs(outputs: np.ndarray) -> np.ndarray:
  """sign(v) * log1p(|v|) in float64: output features span 1e-3 to 1e18, and distances between
  raw values would see only the largest functions."""
  outputs = np.asarray(outputs, np.float64)
  return np.sign(outputs) * np.log1p(np.abs(outputs))


def raw_features(candidates: Candidates) -> tuple[np.ndarray, np.ndarray]:
  """The 'raw' feature set: (features (n, d) float64 with NaN rows, eligible mask).

  Output features are compressed with sign(v) * log1p(|v|) (they span 1e-3 to 1e18, so raw
  euclidean distances would see only the largest functions); Fisher CDFs lie in [0, 1] and are
  used as they are. Each block is then centred and divided by the root of its total variance
  (over eligible rows), so that both blocks weigh the same in the euclidean distance the k-NN
  regression uses, whatever their widths.
  """
  mask = eligible(candidates, "raw")
  columns = []
  for kind, block in _blocks(candidates, "raw"):
    block = np.asarray(block, np.float64)[mask]
    if kind == "outputs":
      block = compressed_outputs(block)
    block = block - block.mean(axis=0)
    scale = np.sqrt((block ** 2).sum(axis=1).mean())
    columns.append(block / scale if scale > 0 else block)
  result = np.full((len(mask), sum(c.shape[1] for c in columns)), np.nan)
  result[mask] = np.concatenate(columns, axis=1)
  return result, mask


def embed(candidates: Candidates, feature_set: str = "union", *,
          random_state: int = DEFAULT_RANDOM_STATE, graph=None) -> np.ndarray:
  """The candidates' coordinates for the surrogate: float64 (n, dims), NaN rows ineligible.

  UMAP sets give 2-D layouts, deterministic for a random_state; 'raw' gives the scaled
  features (random_state unused). Pass `graph` (from fuzzy_graph) to lay out several random
  states without recomputing the neighbours.
  """
  if feature_set == "raw":
    return raw_features(candidates)[0]
  mask = eligible(candidates, feature_set)
  if graph is None:
    graph = fuzzy_graph(candidates, feature_set)
  blocks = _blocks(candidates, feature_set)
  if len(blocks) == 1:
    kind, block = blocks[0]
    data = np.asarray(block, np.float64)[mask]
    metric = OUTPUT_METRIC if kind == "outputs" else FISHER_METRIC
  else:
    data, metric = None, "euclidean"
  result = np.full((len(mask), COMPONENTS), np.nan)
  result[mask] = _layout(graph, data, metric, random_state)
  return result


class Surrogate:
  """k-NN regression of accuracy on an embedding (euclidean distances in the embedding).

  scikit-learn's KNeighborsRegressor with uniform weights and its automatic, exact neighbour
  search (a k-d tree in 2-D: fit and predict for 3,000 rows take about 5 ms, ten times less
  than brute force, which matters when a replay refits after every evaluation).
  """

  def __init__(self, embedding: np.ndarray, eligible_mask: np.ndarray | None = None):
    """
    Args:
      embedding: (n, dims) coordinates, one row per candidate class; NaN rows are ineligible.
      eligible_mask: optional further restriction; rows that are not finite are never eligible.
    """
    self.embedding = np.asarray(embedding, np.float64)
    if self.embedding.ndim != 2:
      raise ValueError(f"embedding must be (n, dims), got shape {self.embedding.shape}")
    mask = np.isfinite(self.embedding).all(axis=1)
    if eligible_mask is not None:
      mask &= np.asarray(eligible_mask, bool)
    self.eligible = mask
    self._rows = np.flatnonzero(mask)

  @classmethod
  def from_candidates(cls, candidates: Candidates, feature_set: str = "union", *,
                      random_state: int = DEFAULT_RANDOM_STATE) -> Surrogate:
    return cls(embed(candidates, feature_set, random_state=random_state))

  def __len__(self):
    return len(self.eligible)

  def predict(self, history: Mapping[int, float], *, k: int = DEFAULT_K,
              failure_value: float = 0.0) -> np.ndarray:
    """Predicted accuracy of every eligible row (NaN elsewhere), float64 (n,).

    Args:
      history: class id -> validation accuracy of the functions evaluated so far; NaN (a
        failed training) regresses as `failure_value`. Ineligible ids carry no position and
        are left out of the fit.
      k: neighbours averaged (uniform weights), at most the number of usable evaluations.
      failure_value: accuracy a failed evaluation counts as.

    With no usable evaluation yet every eligible row predicts `failure_value`.
    """
    ids = np.fromiter((i for i in history), np.int64, len(history))
    accuracies = np.fromiter((history[i] for i in history), np.float64, len(history))
    keep = self.eligible[ids] if len(ids) else np.zeros(0, bool)
    ids, accuracies = ids[keep], accuracies[keep]
    accuracies[~np.isfinite(accuracies)] = failure_value
    result = np.full(len(self.eligible), np.nan)
    if len(ids) == 0:
      result[self._rows] = failure_value
      return result
    from sklearn.neighbors import KNeighborsRegressor  # pylint: disable=import-outside-toplevel
    regressor = KNeighborsRegressor(n_neighbors=min(k, len(ids)))
    regressor.fit(self.embedding[ids], accuracies)
    result[self._rows] = regressor.predict(self.embedding[self._rows])
    return result


def _correlations(predicted: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
  from scipy import stats  # pylint: disable=import-outside-toplevel
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # constant predictions: NaN, reported as such
    spearman = stats.spearmanr(predicted, actual).statistic
    kendall = stats.kendalltau(predicted, actual).statistic
  return float(spearman), float(kendall)


def quality(embedding_or_surrogate, accuracies: np.ndarray, train_sizes: Sequence[int], *,
            seeds: Sequence[int] = range(10), k: int = DEFAULT_K) -> dict:
  """Predictive quality of the surrogate, as in White et al. 2021 (performance predictors in
  NAS): rank correlation between predicted and true accuracy on the held-out functions.

  For each train size and seed, a random sample (numpy Generator seeded with the seed) of
  that many eligible functions with finite accuracy is the history; every other such function
  is predicted. Failed (non-finite) functions are left out of both sides.

  Returns {"train_sizes": (s,), "seeds": (r,), "spearman": (s, r), "kendall": (s, r),
  "spearman_median": (s,), "kendall_median": (s,)}; a median ignores NaN correlations (constant
  predictions).
  """
  surrogate = (embedding_or_surrogate if isinstance(embedding_or_surrogate, Surrogate)
               else Surrogate(embedding_or_surrogate))
  accuracies = np.asarray(accuracies, np.float64)
  if accuracies.shape != (len(surrogate),):
    raise ValueError(f"expected {len(surrogate)} accuracies, got shape {accuracies.shape}")
  pool = np.flatnonzero(surrogate.eligible & np.isfinite(accuracies))
  train_sizes, seeds = list(train_sizes), list(seeds)
  spearman = np.full((len(train_sizes), len(seeds)), np.nan)
  kendall = np.full_like(spearman, np.nan)
  for row, size in enumerate(train_sizes):
    if not 0 < size < len(pool):
      raise ValueError(f"train size {size} must be in [1, {len(pool) - 1}] "
                       f"({len(pool)} eligible functions with finite accuracy)")
    for column, seed in enumerate(seeds):
      train = np.random.default_rng(seed).choice(pool, size, replace=False)
      test = np.setdiff1d(pool, train)
      predicted = surrogate.predict({int(i): accuracies[i] for i in train}, k=k)
      spearman[row, column], kendall[row, column] = _correlations(predicted[test],
                                                                  accuracies[test])
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # all-NaN rows give NaN medians
    return {"train_sizes": np.asarray(train_sizes), "seeds": np.asarray(seeds),
            "spearman": spearman, "kendall": kendall,
            "spearman_median": np.nanmedian(spearman, axis=1),
            "kendall_median": np.nanmedian(kendall, axis=1)}


def leave_one_out_spearman(points: np.ndarray, accuracies: Sequence[float], k: int = DEFAULT_K,
                           *, failure_value: float | None = 0.0) -> float:
  """How well the surrogate ranks what it has seen: each evaluated function with a finite
  accuracy predicted from all the others, and the Spearman correlation of predictions and truths.

  The predictor is `Surrogate.predict`'s: scikit-learn's KNeighborsRegressor, k neighbours,
  uniform weights, euclidean distances on the same coordinates.

  Args:
    points: (n, dims) coordinates of the evaluated functions (their rows of `embed`); a row
      that is not finite has no position and is left out, as `Surrogate.predict` leaves it.
    accuracies: (n,) their validation accuracies; NaN is a failed training.
    k: neighbours averaged, as in `Surrogate.predict`.
    failure_value: what a failed function counts as when it is a neighbour, as in
      `Surrogate.predict` (never predicted itself: it has no truth to rank); None leaves failed
      functions out.

  Returns:
    The correlation, or NaN with fewer than k + 2 placed functions of finite accuracy (with
    k + 1 or fewer, each prediction is the mean of all the others, a decreasing function of the
    truth: -1 whatever the embedding) or when every prediction is the same.
  """
  points = np.asarray(points, np.float64)
  accuracies = np.asarray(accuracies, np.float64)
  if points.ndim != 2 or accuracies.shape != (len(points),):
    raise ValueError(f"expected points (n, dims) and n accuracies, got shapes {points.shape} "
                     f"and {accuracies.shape}")
  placed = np.isfinite(points).all(axis=1)
  truths = placed & np.isfinite(accuracies)
  if truths.sum() < k + 2:
    return float("nan")
  fitted = placed if failure_value is not None else truths
  targets = np.where(np.isfinite(accuracies), accuracies,
                     np.nan if failure_value is None else failure_value)[fitted]
  from sklearn.neighbors import KNeighborsRegressor  # pylint: disable=import-outside-toplevel
  regressor = KNeighborsRegressor(n_neighbors=k).fit(points[fitted], targets)
  # One fit for all n predictions: without a query, kneighbors gives each fitted point's k
  # nearest OTHER points, the neighbours a fit without that point would find; their uniform
  # mean is what KNeighborsRegressor.predict returns.
  neighbours = regressor.kneighbors(return_distance=False)
  predicted = targets[neighbours].mean(axis=1)
  scored = truths[fitted]
  return _correlations(predicted[scored], targets[scored])[0]
