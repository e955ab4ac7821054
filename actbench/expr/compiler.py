"""Expressions compiled to pure jax functions, and normalization to zero mean, unit variance.

`compile('max(relu(x),cosh(elu(x)))')` returns `f(x)` for a jax array of any shape and any
floating dtype (float32, bfloat16, float64): elementwise, dtype-preserving, traceable under
jit, vmap, grad and jvp. Compiling the same expression twice returns the same function object,
so jit's cache is shared too.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from numpy.polynomial import hermite_e

from actbench.expr import host, operators
from actbench.expr.expression import Expr, parse

# Gauss-Hermite quadrature for moments under N(0, 1). Nodes whose weight is below what
# float32 represents are dropped: in float32 they would only turn 0 * inf into NaN. With
# 100 nodes the mean and variance of relu are off by about 2e-3 (kinks converge slowly);
# smooth functions converge far faster.
QUADRATURE_NODES = 100
_MIN_WEIGHT = 1e-30


@functools.cache
def quadrature() -> tuple[np.ndarray, np.ndarray]:
  """(nodes, weights), float64, with sum(weights * f(nodes)) ~= E[f(x)] for x ~ N(0, 1)."""
  nodes, weights = hermite_e.hermegauss(QUADRATURE_NODES)
  weights = weights / math.sqrt(2 * math.pi)
  keep = weights > _MIN_WEIGHT
  return nodes[keep], weights[keep]


def as_float_array(x) -> jax.Array:
  """x as a jax array of a floating dtype (integers and booleans become the default float)."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.result_type(float))
  return x


def compute_dtype(dtype):
  """Half-precision inputs are computed in float32 and rounded once at the end: the activation
  is elementwise and fuses with its neighbours, so this costs no memory traffic, while erfc or
  expm1 evaluated in bfloat16 lose most of their digits."""
  return jnp.float32 if jnp.finfo(dtype).bits < 32 else dtype


def evaluate(expr: Expr, x: jax.Array) -> jax.Array:
  """Evaluates `expr` at `x` with jax operators; shared subtrees are computed once."""
  memo: dict[Expr, jax.Array] = {}

  def visit(node: Expr) -> jax.Array:
    value = memo.get(node)
    if value is None:
      if node.is_leaf:
        value = x
      else:
        value = operators.get(node.op).jax_fn(*(visit(arg) for arg in node.args))
      memo[node] = value
    return value

  return visit(expr)


def host_moments(expr) -> tuple[float, float]:
  """(mean, standard deviation) of `expr(x)` under x ~ N(0, 1), in float64 on the host."""
  nodes, weights = quadrature()
  values = host.evaluate([parse(expr)], nodes)[0]
  with np.errstate(all="ignore"):
    mean = float(np.sum(weights * values))
    variance = float(np.sum(weights * (values - mean) ** 2))
  return mean, math.sqrt(variance) if variance >= 0 else math.nan


def check_moments(name: str, mean: float, std: float):
  """Raises a ValueError naming `name` unless the moments allow normalization."""
  if not (math.isfinite(mean) and math.isfinite(std)):
    raise ValueError(
        f"cannot normalize {name!r}: its moments under N(0,1) are not finite "
        f"(mean {mean}, standard deviation {std})")
  if std == 0:
    raise ValueError(f"cannot normalize {name!r}: it is constant under N(0,1) (variance 0)")


def jax_moments(fn: Callable[[jax.Array], jax.Array], dtype=jnp.float32):
  """(mean, std) of fn under N(0, 1) by quadrature, traceable: non-finite moments give NaN
  or inf instead of an error (use inside jit, e.g. per population member)."""
  nodes, weights = quadrature()
  values = fn(jnp.asarray(nodes, dtype)).astype(dtype)
  weights = jnp.asarray(weights, dtype)
  mean = jnp.sum(weights * values)
  std = jnp.sqrt(jnp.sum(weights * (values - mean) ** 2))
  return mean, std


@functools.lru_cache(maxsize=1 << 14)
def _compile(expr: Expr, normalize: bool) -> Callable[[jax.Array], jax.Array]:
  if normalize:
    mean, std = host_moments(expr)
    check_moments(str(expr), mean, std)

    def activation(x):
      x = as_float_array(x)
      values = evaluate(expr, x.astype(compute_dtype(x.dtype)))
      return ((values - mean) / std).astype(x.dtype)
  else:
    def activation(x):
      x = as_float_array(x)
      return evaluate(expr, x.astype(compute_dtype(x.dtype))).astype(x.dtype)

  activation.__name__ = activation.__qualname__ = str(expr)
  activation.expr = expr
  activation.normalized = normalize
  return activation


def compile(expr, normalize: bool = False) -> Callable[[jax.Array], jax.Array]:  # pylint: disable=redefined-builtin
  """The activation function `expr` (a string or Expr) as a pure jax function.

  Args:
    expr: e.g. 'max(relu(x),cosh(elu(x)))'.
    normalize: return (f - E[f]) / sqrt(Var[f]) under x ~ N(0, 1) instead of f; the moments
      are computed once, in float64, by Gauss-Hermite quadrature, and a ValueError names the
      function when they are not finite or the variance is 0.

  Raises:
    ExpressionError: `expr` is malformed.
  """
  return _compile(parse(expr), bool(normalize))


operators._ON_CHANGE.append(_compile.cache_clear)
