"""Independent float64 references for every built-in operator, written from METHOD.md with
Python's math module (scipy only for the scaled Bessel functions), one scalar at a time.

At +-inf the references take the mathematical limits; NaN in gives NaN out, except for the
constant operators.
"""

import math

import numpy as np
import scipy.special

INF = math.inf


def _guard(fn, nan_in_nan_out=True):
  def scalar(x):
    if nan_in_nan_out and math.isnan(x):
      return math.nan
    try:
      return fn(x)
    except OverflowError:
      return math.nan  # replaced below by explicit handling where a limit exists
  return scalar


def _exp(x):
  if x > 709.78:
    return INF
  return math.exp(x)


def _sigmoid(x):
  if x >= 0:
    return 1 / (1 + _exp(-x))
  e = _exp(x)
  return e / (1 + e)


def _softplus(x):
  if x == INF:
    return INF
  return max(x, 0.0) + math.log1p(_exp(-abs(x)))


def _expm1(x):
  if x > 709.78:
    return INF
  return math.expm1(x)


def _sinh(x):
  if abs(x) > 710.4:
    return math.copysign(INF, x)
  return math.sinh(x)


def _cosh(x):
  if abs(x) > 710.4:
    return INF
  return math.cosh(x)


def _reciprocal(x):
  if x == 0:
    return math.copysign(INF, x)
  return 1 / x


def _times_vanishing(x, factor):
  """x * factor(x) where factor(x) -> 0 as x -> -inf fast enough for the product to vanish."""
  if x == -INF:
    return 0.0
  return x * factor(x)


def _is_odd_integer(b):
  return math.isfinite(b) and b == int(b) and int(b) % 2 == 1


def _pow(a, b):
  """C99 / IEEE 754 pow."""
  if math.isnan(a) or math.isnan(b):
    return 1.0 if (a == 1 or b == 0) else math.nan  # 1^nan = nan^0 = 1
  if a == 0 and b < 0:
    return math.copysign(INF, a) if _is_odd_integer(b) else INF
  try:
    return math.pow(a, b)
  except OverflowError:
    return -INF if a < 0 and _is_odd_integer(b) else INF
  except ValueError:  # negative base, non-integer exponent
    return math.nan


def _div(a, b):
  if b == 0:
    if a == 0 or math.isnan(a):
      return math.nan
    return math.copysign(INF, a) * math.copysign(1.0, b)
  return a / b


def _nan_max(a, b):
  if math.isnan(a) or math.isnan(b):
    return math.nan
  return max(a, b)


def _nan_min(a, b):
  if math.isnan(a) or math.isnan(b):
    return math.nan
  return min(a, b)


SELU_SCALE = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772

UNARY = {
    "zero": _guard(lambda x: 0.0, nan_in_nan_out=False),
    "one": _guard(lambda x: 1.0, nan_in_nan_out=False),
    "identity": _guard(lambda x: x),
    "negative": _guard(lambda x: -x),
    "abs": _guard(abs),
    "reciprocal": _guard(_reciprocal),
    "square": _guard(lambda x: x * x),
    "exp": _guard(_exp),
    "erf": _guard(math.erf),
    "erfc": _guard(math.erfc),
    "sinh": _guard(_sinh),
    "cosh": _guard(_cosh),
    "tanh": _guard(math.tanh),
    "expm1": _guard(_expm1),
    "sigmoid": _guard(_sigmoid),
    "log_sigmoid": _guard(lambda x: -_softplus(-x)),
    "arcsinh": _guard(math.asinh),
    "arctan": _guard(math.atan),
    "bessel_i0e": _guard(lambda x: float(scipy.special.i0e(x))),
    "bessel_i1e": _guard(lambda x: float(scipy.special.i1e(x))),
    "relu": _guard(lambda x: x if x > 0 else 0.0),
    "elu": _guard(lambda x: x if x > 0 else _expm1(x)),
    "selu": _guard(lambda x: SELU_SCALE * (x if x > 0 else SELU_ALPHA * _expm1(x))),
    "swish": _guard(lambda x: _times_vanishing(x, _sigmoid)),
    "softplus": _guard(_softplus),
    "softsign": _guard(lambda x: math.copysign(1.0, x) if math.isinf(x) else x / (1 + abs(x))),
    "hard_sigmoid": _guard(lambda x: min(max(0.2 * x + 0.5, 0.0), 1.0)),
    "elish": _guard(lambda x: x * _sigmoid(x) if x > 0 else _expm1(x) * _sigmoid(x)),
    "leakyrelu": _guard(lambda x: x if x > 0 else 0.01 * x),
    "mish": _guard(lambda x: _times_vanishing(x, lambda v: math.tanh(_softplus(v)))),
    "gelu": _guard(lambda x: _times_vanishing(x, lambda v: 0.5 * math.erfc(-v / math.sqrt(2)))),
}

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": _div,
    "pow": _pow,
    "max": _nan_max,
    "min": _nan_min,
}

NARY = {"sum_n": "add", "prod_n": "mul", "max_n": "max", "min_n": "min"}


def unary(name, x):
  """float64 array of the reference unary operator applied elementwise."""
  return np.array([UNARY[name](float(v)) for v in np.ravel(x)]).reshape(np.shape(x))


def binary(name, a, b):
  a, b = np.broadcast_arrays(np.asarray(a, float), np.asarray(b, float))
  values = [BINARY[name](float(u), float(v)) for u, v in zip(a.ravel(), b.ravel())]
  return np.array(values).reshape(a.shape)


def nary(name, *args):
  result = args[0]
  for arg in args[1:]:
    result = binary(NARY[name], result, arg)
  return result


def assert_same_values(actual, expected, rtol, atol=0.0):
  """Same NaN and +-inf positions; finite values close (relative); signs of zeros ignored."""
  actual = np.asarray(actual, np.float64)
  expected = np.asarray(expected, np.float64)
  np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
  np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected))
  np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected))
  finite = np.isfinite(expected)
  np.testing.assert_allclose(actual[finite], expected[finite], rtol=rtol, atol=atol)
