"""Fisher features on a budget: which classes get them, chosen in rounds as the search goes.

Output features cost microseconds a function (NumPy on the host); Fisher features cost a
forward and backward pass of the model. Over a space of a million classes only a few thousand
can have Fisher features, so `config.search.fisher_budget = B` gives them to the baselines plus
at most B classes (METHOD.md section 4 computes them for a few thousand of a million names),
and the surrogate proposes only among those. They are chosen in rounds (`Plan`): round r is
picked once the search holds r * `every` evaluations, `round_size` classes at a time, until B.

How a round picks (`Plan.choice`):
  outputs  an outputs-only surrogate: k-NN regression of the evaluated accuracies on every
           class's output sketch ranks the classes without Fisher features; before any finite
           evaluation, diversity instead (`representatives`: the classes nearest the centres
           of a k-means of the sketches).
  random   uniform among the classes without Fisher features.

Only classes whose outputs are finite are ever picked (the others are no candidates).

The sketch (`sketch_of`): a class's 1,000 output features compressed with sign(v) log1p(|v|)
(outputs span 1e-3 to 1e18) and projected on an orthonormal basis of the first SKETCH_DIMS
Legendre polynomials over the reference points: 16 float32 numbers per class whatever the
space's size, fixed in advance (no fit over the space, so it streams), and euclidean distances
between sketches are those between the compressed outputs' smooth parts.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from actbench.expr import features
from actbench.search import surrogate
from actbench.search.candidates import Candidates

SKETCH_DIMS = 16
CHOICES = ("outputs", "random")
NEIGHBORS = 3  # k of the outputs-only k-NN, as the surrogate's
DIVERSITY_POOL = 50_000  # the k-means of a round without evaluations sees at most this many
_CHUNK = 8192  # rows of distances computed at a time: bounds memory


@functools.cache
def _basis() -> np.ndarray:
  """(1000, SKETCH_DIMS) float64, orthonormal columns spanning the Legendre polynomials of
  degree < SKETCH_DIMS at the reference points (scaled to [-1, 1])."""
  points = features.reference_points() / features.REFERENCE_CLIP
  vandermonde = np.polynomial.legendre.legvander(points, SKETCH_DIMS - 1)
  basis, _ = np.linalg.qr(vandermonde)
  basis.setflags(write=False)
  return basis


def sketch_of(outputs: np.ndarray) -> np.ndarray:
  """(n, SKETCH_DIMS) float32 sketches of (n, 1000) output features; NaN rows where the
  outputs are not all finite."""
  outputs = np.asarray(outputs, np.float64)
  finite = np.isfinite(outputs).all(axis=1)
  compressed = surrogate.compressed_outputs(outputs[finite])
  result = np.full((len(outputs), SKETCH_DIMS), np.nan, np.float32)
  result[finite] = compressed @ _basis()
  return result


def iter_sketches(names: Iterable[str], *, normalize: bool = False,
                  chunk_size: int = features.DEFAULT_CHUNK_SIZE):
  """(names chunk, sketches) of `names`, streamed: never more than a chunk of outputs."""
  for chunk, outputs in features.iter_outputs(names, normalize=normalize,
                                              chunk_size=chunk_size):
    yield chunk, sketch_of(outputs)


@dataclasses.dataclass(frozen=True)
class Plan:
  """When rounds happen and how many classes each adds.

  Attributes:
    budget: classes featurized besides the baselines, in all (> 0).
    round_size: classes per round (the last round may be smaller).
    every: evaluations between rounds: round r is due once r * every classes are evaluated.
    choice: 'outputs' or 'random' (module docstring).
    seed: fixes every random choice (random picks, the diversity pool).
  """
  budget: int
  round_size: int
  every: int
  choice: str = "outputs"
  seed: int = 0

  def __post_init__(self):
    if self.budget < 1 or self.round_size < 1 or self.every < 1:
      raise ValueError(f"budget, round_size and every must be positive, got {self.budget}, "
                       f"{self.round_size}, {self.every}")
    if self.choice not in CHOICES:
      raise ValueError(f"unknown choice {self.choice!r}; expected one of {CHOICES}")

  @classmethod
  def from_config(cls, config) -> Plan | None:
    """config.search's plan; None when fisher_budget is 0 (every class gets features)."""
    cfg = config.search
    budget = int(cfg.fisher_budget)
    if budget <= 0:
      return None
    round_size = int(cfg.fisher_round) or max(math.ceil(budget / 10), 1)
    every = int(cfg.fisher_every) or max(int(cfg.population_size), 1)
    return cls(budget, min(round_size, budget), every, str(cfg.fisher_choice), int(config.seed))

  @property
  def rounds(self) -> int:
    return math.ceil(self.budget / self.round_size)

  def size_of(self, round_index: int) -> int:
    return min(self.round_size, self.budget - round_index * self.round_size)

  def rounds_due(self, evaluated: int) -> int:
    """How many rounds should have been picked once `evaluated` classes are evaluated."""
    return min(self.rounds, evaluated // self.every + 1)

  def pick(self, sketches: np.ndarray, featured: np.ndarray, history: Mapping[int, float],
           round_index: int) -> list[int]:
    """Round `round_index`'s classes: up to size_of(round_index) classes with finite sketches
    outside `featured` (bool mask), best first. `history`: class id -> accuracy (NaN: failed)
    of the evaluations so far."""
    k = self.size_of(round_index)
    pool = np.flatnonzero(~np.asarray(featured, bool) & np.isfinite(sketches).all(axis=1))
    if k <= 0 or not len(pool):
      return []
    if self.choice == "random":
      rng = np.random.default_rng([self.seed, round_index])
      return rng.permutation(pool)[:k].tolist()
    evaluated = [(int(i), float(a)) for i, a in history.items()
                 if np.isfinite(sketches[int(i)]).all()]
    if not any(math.isfinite(a) for _, a in evaluated):
      rng = np.random.default_rng([self.seed, round_index])
      if len(pool) > DIVERSITY_POOL:
        pool = np.sort(rng.choice(pool, DIVERSITY_POOL, replace=False))
      return representatives(sketches, pool, k, [self.seed, round_index])
    ids = np.array([i for i, _ in evaluated], np.int64)
    accuracies = np.array([a if math.isfinite(a) else 0.0 for _, a in evaluated])
    predicted, closeness = knn_predict(sketches[ids], accuracies, sketches, pool)
    order = np.lexsort((pool, closeness, -predicted))  # best prediction, then nearest, then id
    return pool[order[:k]].tolist()


def _squared_distances(rows: np.ndarray, others: np.ndarray) -> np.ndarray:
  rows, others = np.asarray(rows, np.float64), np.asarray(others, np.float64)
  result = ((rows ** 2).sum(1)[:, None] - 2 * rows @ others.T + (others ** 2).sum(1)[None])
  return np.maximum(result, 0.0)


def knn_predict(train: np.ndarray, values: np.ndarray, sketches: np.ndarray,
                rows: np.ndarray, k: int = NEIGHBORS) -> tuple[np.ndarray, np.ndarray]:
  """k-NN regression (uniform weights, euclidean) of `values` at `train` sketches, predicted
  at sketches[rows], chunk by chunk: (predictions, mean distance to the k neighbours)."""
  k = min(k, len(train))
  predicted = np.empty(len(rows))
  closeness = np.empty(len(rows))
  for start in range(0, len(rows), _CHUNK):
    block = _squared_distances(sketches[rows[start:start + _CHUNK]], train)
    if k < block.shape[1]:  # the k nearest without sorting every distance (long histories)
      nearest = np.argpartition(block, k - 1, axis=1)[:, :k]
    else:
      nearest = np.broadcast_to(np.arange(k), block.shape).copy()
    # Rounded: equal means of other neighbours tie exactly, and the tie goes to the nearer
    # class, not to the last bit of a sum.
    predicted[start:start + _CHUNK] = np.round(values[nearest].mean(axis=1), 12)
    closeness[start:start + _CHUNK] = np.sqrt(np.take_along_axis(block, nearest, 1)).mean(1)
  return predicted, closeness


def representatives(sketches: np.ndarray, pool: np.ndarray, k: int, seed) -> list[int]:
  """k classes of `pool` that represent it: k-means (scikit-learn, one initialization seeded
  by `seed`) of their sketches into k clusters, and for each cluster in turn the class
  nearest its centre that is not taken yet. Diversity without outliers: farthest-point
  sampling would pick the most extreme functions first (measured: later to the best)."""
  from sklearn.cluster import KMeans  # pylint: disable=import-outside-toplevel
  points = np.asarray(sketches[pool], np.float64)
  if len(pool) <= k:
    return pool.tolist()
  seed = int(np.random.default_rng(seed).integers(2**31))
  centres = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(points).cluster_centers_
  picked, taken = [], set()
  for start in range(0, k, _CHUNK):
    distances = _squared_distances(centres[start:start + _CHUNK], points)
    for row in np.argsort(distances, axis=1, kind="stable"):
      index = next(int(pool[j]) for j in row if int(pool[j]) not in taken)
      picked.append(index)
      taken.add(index)
  return picked


def featured_after(baselines: Sequence[int], picks: Sequence[Sequence[int]]) -> list[int]:
  """The classes with Fisher features once rounds `picks` are done: baselines first."""
  return list(dict.fromkeys([*baselines, *(i for ids in picks for i in ids)]))


def scatter(rows: np.ndarray, ids: Sequence[int], n: int) -> np.ndarray:
  """(n, width) float64: `rows` at `ids`, NaN elsewhere."""
  result = np.full((n, np.shape(rows)[1]), np.nan)
  result[np.asarray(ids, np.int64)] = rows
  return result


def embed_subset(candidates: Candidates, feature_set: str, random_state: int) -> np.ndarray:
  """surrogate.embed of a few classes (the featured ones), NaN rows where ineligible; all NaN
  (no proposal yet) while fewer than UMAP's minimum are eligible."""
  mask = surrogate.eligible(candidates, feature_set) if len(candidates) else np.zeros(0, bool)
  if feature_set != "raw" and mask.sum() < surrogate.MIN_POINTS:
    return np.full((len(candidates), surrogate.COMPONENTS), np.nan)
  return surrogate.embed(candidates, feature_set, random_state=random_state)


class BudgetedStrategy:
  """A surrogate strategy over the classes a budget has featured so far (a replay of a search
  with config.search.fisher_budget): before each proposal, the rounds due are picked from the
  history, the featured classes embedded again (UMAP over them alone) and the strategy
  rebuilt on that embedding; a round comes early when the strategy has too few classes left.

  `make(embedding)` builds the strategy (e.g. AquaSurf with that embedding); `candidates`
  holds every class's output and Fisher features (a table's).
  """

  def __init__(self, candidates: Candidates, plan: Plan,
               make: Callable[[np.ndarray], object], *, feature_set: str = "union",
               random_state: int = surrogate.DEFAULT_RANDOM_STATE):
    self.candidates, self.plan, self.make = candidates, plan, make
    self.feature_set, self.random_state = feature_set, random_state
    self.sketches = sketch_of(candidates.outputs)
    self.baselines = candidates.baseline_ids()
    self.picks: list[list[int]] = []
    self.strategy = None

  @property
  def featured(self) -> list[int]:
    return featured_after(self.baselines, self.picks)

  def _grow(self, history: Mapping[int, float], rounds: int) -> None:
    while len(self.picks) < rounds:
      mask = np.zeros(len(self.candidates), bool)
      mask[self.featured] = True
      self.picks.append(self.plan.pick(self.sketches, mask, history, len(self.picks)))
    ids = self.featured
    subset = Candidates(classes=[self.candidates.classes[i] for i in ids],
                        outputs=self.candidates.outputs[ids],
                        fisher=self.candidates.fisher[ids], schema=None, baselines=())
    layout = embed_subset(subset, self.feature_set, self.random_state)
    self.strategy = self.make(scatter(layout, ids, len(self.candidates)))

  def propose(self, history, k, *, exclude=()) -> list[int]:
    due = self.plan.rounds_due(len(history))
    if self.strategy is None or due > len(self.picks):
      self._grow(history, max(due, len(self.picks)))
    proposal = self.strategy.propose(history, k, exclude=exclude)
    while len(proposal) < k and len(self.picks) < self.plan.rounds:
      self._grow(history, len(self.picks) + 1)  # too few featured classes left: a round early
      proposal = self.strategy.propose(history, k, exclude=exclude)
    return proposal
