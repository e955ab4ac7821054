"""Output features: a function's values at 1,000 fixed reference points (METHOD.md section 2).

The reference points are `numpy.random.RandomState(0).normal(size=1000)` clipped to [-5, 5].
Values are computed in float64 and rounded to float32: the same numbers decide functional
equivalence (space.equivalence_classes), so two functions share a class exactly when their
output features are identical.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from actbench.expr import compiler, host
from actbench.expr.expression import Expr, parse

NUM_REFERENCE_POINTS = 1000
REFERENCE_SEED = 0
REFERENCE_CLIP = 5.0

# Functions evaluated per host call: bounds memory (each distinct subtree of a chunk holds a
# float64 row of 1,000 values) while keeping NumPy's calls large.
DEFAULT_CHUNK_SIZE = 2048


@functools.cache
def reference_points() -> np.ndarray:
  """The 1,000 reference points, float64, read-only."""
  points = np.random.RandomState(REFERENCE_SEED).normal(size=NUM_REFERENCE_POINTS)
  points = np.clip(points, -REFERENCE_CLIP, REFERENCE_CLIP)
  points.setflags(write=False)
  return points


def chunked(items: Iterable, size: int) -> Iterator[list]:
  """Consecutive lists of at most `size` items (the last may be shorter)."""
  if size < 1:
    raise ValueError(f"chunk size must be positive, got {size}")
  chunk = []
  for item in items:
    chunk.append(item)
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def _parse_all(names: Sequence) -> list[Expr]:
  return [parse(name) for name in names]


def _check_names(names):
  if isinstance(names, (str, Expr)):
    raise TypeError("expected a list of function names, got a single name; wrap it in a list")


def outputs_of(exprs: Sequence[Expr], normalize: bool = False) -> np.ndarray:
  """Output features of parsed expressions: float32 (len(exprs), 1000).

  With `normalize`, each function is first replaced by (f - E[f]) / sqrt(Var[f]) under
  N(0, 1) (Gauss-Hermite quadrature, as compiler.compile does); the rows of functions whose
  moments are not finite, or whose variance is 0, are NaN.
  """
  points = reference_points()
  if not normalize:
    with np.errstate(over="ignore"):  # beyond float32's range is inf, as in float32 itself
      return host.evaluate(exprs, points).astype(np.float32)
  nodes, weights = compiler.quadrature()
  values = host.evaluate(exprs, np.concatenate([points, nodes]))
  at_points, at_nodes = values[:, :points.size], values[:, points.size:]
  with np.errstate(all="ignore"):
    mean = at_nodes @ weights
    std = np.sqrt(((at_nodes - mean[:, None]) ** 2) @ weights)
    ok = np.isfinite(mean) & np.isfinite(std) & (std > 0)
    normalized = (at_points - mean[:, None]) / std[:, None]
    normalized[~ok] = np.nan
    return normalized.astype(np.float32)


def iter_outputs(names: Iterable, normalize: bool = False,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[tuple[list, np.ndarray]]:
  """Streams (names, float32 outputs) chunk by chunk, for spaces too large to hold at once."""
  _check_names(names)
  for chunk in chunked(names, chunk_size):
    yield chunk, outputs_of(_parse_all(chunk), normalize)


def outputs(names: Iterable, normalize: bool = False,
            chunk_size: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
  """Output features of many functions: float32 array (n, 1000), row i for names[i].

  Args:
    names: function names (strings or Exprs), e.g. from space.enumerate.
    normalize: features of the normalized functions (see outputs_of).
    chunk_size: functions evaluated together; memory grows with it.

  Raises:
    ExpressionError: a name is malformed (the message quotes it).
  """
  _check_names(names)
  names = list(names)
  result = np.empty((len(names), NUM_REFERENCE_POINTS), np.float32)
  start = 0
  for chunk, values in iter_outputs(names, normalize, chunk_size):
    result[start:start + len(chunk)] = values
    start += len(chunk)
  return result
