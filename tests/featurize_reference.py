"""Independent references for a Fisher budget's picks (featurize.Plan.pick): scikit-learn's
k-NN for the output-guided rounds, its k-means and a plain nearest-class loop for the rounds
before any evaluation, and the sketch in float64 from the outputs."""

import math

import numpy as np
from sklearn.neighbors import KNeighborsRegressor

from actbench.expr import features


def sketch(outputs, dims=16):
  """float64 sketches: sign-log outputs on the QR basis of the Legendre polynomials."""
  x = features.reference_points() / features.REFERENCE_CLIP
  q, _ = np.linalg.qr(np.polynomial.legendre.legvander(x, dims - 1))
  outputs = np.asarray(outputs, np.float64)
  result = np.full((len(outputs), dims), np.nan)
  finite = np.isfinite(outputs).all(axis=1)
  result[finite] = (np.sign(outputs[finite]) * np.log1p(np.abs(outputs[finite]))) @ q
  return result


def knn_picks(sketches, featured, history, k):
  """The k classes outside `featured` with finite sketches that 3-NN regression of
  `history` (failures as 0) rates best; ties to the smaller mean neighbour distance, then id."""
  sketches = np.asarray(sketches, np.float64)
  finite = np.isfinite(sketches).all(axis=1)
  pool = np.flatnonzero(finite & ~featured)
  ids = np.array([i for i in history if finite[i]])
  values = np.array([history[i] if math.isfinite(history[i]) else 0.0 for i in ids])
  knn = KNeighborsRegressor(n_neighbors=min(3, len(ids)), algorithm="brute").fit(
      sketches[ids], values)
  predicted = knn.predict(sketches[pool])
  distances, _ = knn.kneighbors(sketches[pool])
  order = np.lexsort((pool, distances.mean(axis=1).round(9), -predicted.round(12)))
  return pool[order[:k]].tolist()


def representative_picks(sketches, featured, k, seed):
  """scikit-learn's k-means of the pool (one initialization, `seed` drawn as featurize does),
  then, centre by centre, the nearest class not picked yet, by a plain loop."""
  from sklearn.cluster import KMeans  # pylint: disable=import-outside-toplevel
  sketches = np.asarray(sketches, np.float64)
  pool = np.flatnonzero(np.isfinite(sketches).all(axis=1) & ~featured)
  if len(pool) <= k:
    return pool.tolist()
  state = int(np.random.default_rng(seed).integers(2**31))
  centres = KMeans(n_clusters=k, n_init=1, random_state=state).fit(sketches[pool]).cluster_centers_
  picked = []
  for centre in centres:
    distances = [(float(np.sum((sketches[i] - centre) ** 2)), position)
                 for position, i in enumerate(pool) if int(i) not in picked]
    picked.append(int(pool[min(distances)[1]]))
  return picked


def picks(sketches, featured, history, k, seed):
  """A round's picks with choice 'outputs': k-NN once an evaluation succeeded, else k-means
  representatives (pools below featurize.DIVERSITY_POOL); `seed`: [plan seed, round]."""
  if any(math.isfinite(history[i]) and np.isfinite(sketches[i]).all() for i in history):
    return knn_picks(sketches, featured, history, k)
  return representative_picks(sketches, featured, k, seed)
