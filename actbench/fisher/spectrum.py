"""Host side: eigenvalues of the K-FAC blocks, their log spectrum and the CDF features.

Everything here is NumPy in float64, on the host.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Sequence

import numpy as np
import threadpoolctl  # a dependency of scikit-learn

# Bin range of the log-eigenvalue histograms (natural log).
LOG_RANGE = (-100.0, 100.0)


def eigenvalues(blocks: np.ndarray) -> np.ndarray:
  """Eigenvalues (ascending) of each symmetric matrix in `blocks` (n, d, d), in float64.

  NumPy's eigvalsh (LAPACK syevd without vectors): unlike SciPy's LAPACK wrappers it releases
  the GIL, so `eigenvalues_many` can run several at once.
  """
  return np.linalg.eigvalsh(np.asarray(blocks, np.float64))


def _num_workers() -> int:
  if hasattr(os, "sched_getaffinity"):
    return max(len(os.sched_getaffinity(0)), 1)
  return os.cpu_count() or 1


def eigenvalues_many(stacks: Sequence[np.ndarray]) -> list[np.ndarray]:
  """`eigenvalues` of every stack, as many at once as there are cores, each with one BLAS thread.

  The reduction to tridiagonal form that dominates eigvalsh is half matrix-vector products and
  scales badly over threads: on 2 cores, a 1729 x 1729 matrix took 0.6 s with one OpenBLAS
  thread and 4-10 s with two while other processes used the cores (the threads wait for each
  other). One thread per matrix and a matrix per core keeps every core busy instead (NumPy's
  eigvalsh releases the GIL). Largest matrices first, so that the last ones to finish are small.
  """
  order = sorted(range(len(stacks)), key=lambda i: -np.shape(stacks[i])[-1])
  results: list = [None] * len(stacks)
  workers = min(_num_workers(), len(stacks))
  with threadpoolctl.threadpool_limits(1, user_api="blas"):
    if workers <= 1:
      for i in order:
        results[i] = eigenvalues(stacks[i])
    else:
      with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = {i: pool.submit(eigenvalues, stacks[i]) for i in order}
        for i, future in futures.items():
          results[i] = future.result()
  return results


FLOOR_MODES = ("drop", "clamp")


def _kept(eigenvalues: np.ndarray, floor: float, mode: str = "drop") -> np.ndarray:
  """The eigenvalues a spectrum keeps: the positive ones; with a relative `floor` > 0, those
  below `floor` times the largest are dropped (mode "drop") or raised to it (mode "clamp": every
  eigenvalue, non-positive roundoff too, so that how many there are still counts)."""
  positive = eigenvalues[eigenvalues > 0]
  if floor <= 0 or not positive.size:
    return positive
  bound = floor * positive.max()
  if mode == "clamp":
    return np.maximum(eigenvalues, bound)
  return positive[positive >= bound]


def block_log_eigenvalues(a_eigs: np.ndarray, g_eigs: np.ndarray, floor: float = 0.0,
                          mode: str = "drop") -> tuple[np.ndarray, int]:
  """log(a_i * g_j) = log a_i + log g_j for every block and every pair of kept eigenvalues.

  a_eigs: (blocks, da), g_eigs: (blocks, dg). A factor's eigenvalues are kept as `_kept` says:
  the positive ones, and with a relative `floor` > 0 those at roundoff level (a rank-deficient
  factor, e.g. G behind a softmax, whose logarithms differ between implementations and
  platforms) dropped or clamped to the floor (`mode`). Returns (the sums, float64, block by
  block, a major; the number of products dropped because a factor eigenvalue was not kept).
  """
  if mode not in FLOOR_MODES:
    raise ValueError(f"the eigenvalue floor's mode must be one of {FLOOR_MODES}, got {mode!r}")
  values, dropped = [], 0
  for a, g in zip(a_eigs, g_eigs):
    a_pos, g_pos = _kept(a, floor, mode), _kept(g, floor, mode)
    dropped += a.size * g.size - a_pos.size * g_pos.size
    values.append((np.log(a_pos)[:, None] + np.log(g_pos)[None, :]).ravel())
  return np.concatenate(values), dropped


def num_bin_edges(num_weights: int) -> int:
  """num_weights // 100 edges, but at least 2 (one bin): a layer with fewer than 200 weights
  still contributes one feature (its CDF is [1.0], or NaN if no log-eigenvalue is in range), so
  the feature length depends on the layer list only."""
  return max(num_weights // 100, 2)


def bin_edges(num_weights: int) -> np.ndarray:
  """The histogram bin edges of a layer with `num_weights` weights (bias included)."""
  return np.linspace(*LOG_RANGE, num_bin_edges(num_weights))


def layer_cdf(log_eigs: np.ndarray, num_weights: int) -> np.ndarray:
  """The layer's CDF feature: cumulative histogram on LOG_RANGE normalized to end at 1.

  np.histogram semantics: bins are half-open except the last, values outside the range are not
  counted. NaN everywhere when no value falls in the range (nothing to normalize).
  """
  counts, _ = np.histogram(np.asarray(log_eigs, np.float64), bins=bin_edges(num_weights))
  cumulative = np.cumsum(counts).astype(np.float64)
  if cumulative[-1] == 0:
    return np.full(cumulative.shape, np.nan)
  return cumulative / cumulative[-1]


def cdf_features(log_eigs: Sequence[np.ndarray], num_weights: Sequence[int]) -> np.ndarray:
  """The feature vector: the layers' CDFs concatenated in model order, float32.

  Its length is sum(max(w // 100, 2) - 1 for w in num_weights).
  """
  if len(log_eigs) != len(num_weights):
    raise ValueError(f"{len(log_eigs)} spectra but {len(num_weights)} weight counts")
  return np.concatenate([layer_cdf(v, int(w)) for v, w in zip(log_eigs, num_weights)]
                        ).astype(np.float32)


def feature_length(num_weights: Sequence[int]) -> int:
  return sum(num_bin_edges(int(w)) - 1 for w in num_weights)
