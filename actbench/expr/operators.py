"""The operators of the activation-function language (METHOD.md section 1).

Every built-in operator is written once, against an array namespace `xp`, and runs on two
backends: jax.numpy (what models train with: float32, bfloat16 or float64, under jit, vmap,
grad and jvp) and NumPy/SciPy in float64 (what equivalence classes and output features are
computed with, on the host, thousands of functions at once and without compiling anything).

At x = +-inf operators take their limits where those exist (swish(-inf) = 0, softsign(inf) =
1), and NaN where they do not. Where an operator selects between branches, the unselected
branch is fed a harmless input (the "double where"), so that it can neither overflow into the
value nor put NaN into the gradient: `elu(x)` computes `expm1(min(x, 0))`, never
`expm1(1e4)`.

Users add operators with `register_operator(name, fn, arity)`; `fn` is a jax.numpy function.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

UNARY = "unary"
BINARY = "binary"
NARY = "n-ary"
ARITIES = (UNARY, BINARY, NARY)

# Names that are part of the grammar and can never be operators.
RESERVED = frozenset({"x", *ARITIES})

# Input handed to an operator whose result is discarded (see engine/population.py): every built-in
# operator is finite, with finite derivatives, at 1.
DEFAULT_SAFE_INPUT = 1.0

NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

SELU_SCALE = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772
LEAKY_RELU_SLOPE = 0.01


@dataclasses.dataclass(frozen=True)
class Operator:
  """One operator: its name, arity ('unary', 'binary' or 'n-ary') and implementations.

  `jax_fn` takes jax arrays; `host_fn` takes float64 NumPy arrays. An n-ary operator's
  functions take their arguments positionally (two or more).
  """

  name: str
  arity: str
  jax_fn: Callable[..., jax.Array]
  host_fn: Callable[..., np.ndarray]
  safe_input: float = DEFAULT_SAFE_INPUT
  builtin: bool = False

  @property
  def min_args(self) -> int:
    return {UNARY: 1, BINARY: 2, NARY: 2}[self.arity]

  @property
  def max_args(self) -> float:
    return {UNARY: 1, BINARY: 2, NARY: math.inf}[self.arity]


# Array namespaces the built-in definitions are written against.
_JAX = types.SimpleNamespace(
    where=jnp.where, maximum=jnp.maximum, minimum=jnp.minimum, clip=jnp.clip,
    abs=jnp.abs, exp=jnp.exp, expm1=jnp.expm1, tanh=jnp.tanh, sinh=jnp.sinh,
    cosh=jnp.cosh, arcsinh=jnp.arcsinh, arctan=jnp.arctan, power=jnp.power,
    zeros_like=jnp.zeros_like, ones_like=jnp.ones_like,
    erf=jax.scipy.special.erf, erfc=jax.scipy.special.erfc,
    i0e=jax.scipy.special.i0e, i1e=jax.scipy.special.i1e,
    sigmoid=jax.nn.sigmoid, softplus=jax.nn.softplus, relu=jax.nn.relu,
)
_HOST = types.SimpleNamespace(
    where=np.where, maximum=np.maximum, minimum=np.minimum, clip=np.clip,
    abs=np.abs, exp=np.exp, expm1=np.expm1, tanh=np.tanh, sinh=np.sinh,
    cosh=np.cosh, arcsinh=np.arcsinh, arctan=np.arctan, power=np.power,
    zeros_like=np.zeros_like, ones_like=np.ones_like,
    erf=scipy.special.erf, erfc=scipy.special.erfc,
    i0e=scipy.special.i0e, i1e=scipy.special.i1e,
    sigmoid=scipy.special.expit, softplus=lambda x: np.logaddexp(x, 0.0),
    relu=lambda x: np.maximum(x, 0.0),
)


def _elu(xp, x):
  return xp.where(x > 0, x, xp.expm1(xp.minimum(x, 0)))


def _selu(xp, x):
  return SELU_SCALE * xp.where(x > 0, x, SELU_ALPHA * xp.expm1(xp.minimum(x, 0)))


def _elish(xp, x):
  sig = xp.sigmoid(x)
  return xp.where(x > 0, x * sig, xp.expm1(xp.minimum(x, 0)) * sig)


def _gelu(xp, x):
  # Exact form; erfc keeps the negative tail accurate where 1 + erf(x) cancels.
  return _zero_at_minus_infinity(xp, x, 0.5 * x * xp.erfc(-x * (1 / math.sqrt(2))))


def _zero_at_minus_infinity(xp, x, value):
  """x * (something vanishing) is -inf * 0 = NaN at x = -inf, where the limit is 0."""
  return xp.where(x == -math.inf, 0, value)


def _softsign(xp, x):
  return xp.where(xp.abs(x) == math.inf, xp.where(x > 0, 1, -1), x / (1 + xp.abs(x)))


# name -> definition over a namespace. Order: the 27 of the benchmark space (METHOD.md),
# then the 4 of later searches.
_UNARY_DEFINITIONS = {
    "zero": lambda xp, x: xp.zeros_like(x),
    "one": lambda xp, x: xp.ones_like(x),
    "identity": lambda xp, x: x,
    "negative": lambda xp, x: -x,
    "abs": lambda xp, x: xp.abs(x),
    "reciprocal": lambda xp, x: 1 / x,
    "square": lambda xp, x: x * x,
    "exp": lambda xp, x: xp.exp(x),
    "erf": lambda xp, x: xp.erf(x),
    "erfc": lambda xp, x: xp.erfc(x),
    "sinh": lambda xp, x: xp.sinh(x),
    "cosh": lambda xp, x: xp.cosh(x),
    "tanh": lambda xp, x: xp.tanh(x),
    "expm1": lambda xp, x: xp.expm1(x),
    "sigmoid": lambda xp, x: xp.sigmoid(x),
    "log_sigmoid": lambda xp, x: -xp.softplus(-x),
    "arcsinh": lambda xp, x: xp.arcsinh(x),
    "arctan": lambda xp, x: xp.arctan(x),
    "bessel_i0e": lambda xp, x: xp.i0e(x),
    "bessel_i1e": lambda xp, x: xp.i1e(x),
    "relu": lambda xp, x: xp.relu(x),
    "elu": _elu,
    "selu": _selu,
    "swish": lambda xp, x: _zero_at_minus_infinity(xp, x, x * xp.sigmoid(x)),
    "softplus": lambda xp, x: xp.softplus(x),
    "softsign": _softsign,
    # Keras' definition, not jax.nn.hard_sigmoid (which is relu6(x + 3) / 6).
    "hard_sigmoid": lambda xp, x: xp.clip(0.2 * x + 0.5, 0, 1),
    "elish": _elish,
    "leakyrelu": lambda xp, x: xp.where(x > 0, x, LEAKY_RELU_SLOPE * x),
    "mish": lambda xp, x: _zero_at_minus_infinity(xp, x, x * xp.tanh(xp.softplus(x))),
    "gelu": _gelu,
}

_BINARY_DEFINITIONS = {
    "add": lambda xp, a, b: a + b,
    "sub": lambda xp, a, b: a - b,
    "mul": lambda xp, a, b: a * b,
    "div": lambda xp, a, b: a / b,
    "pow": lambda xp, a, b: xp.power(a, b),
    "max": lambda xp, a, b: xp.maximum(a, b),
    "min": lambda xp, a, b: xp.minimum(a, b),
}

# n-ary operators fold their binary counterpart from the left over two or more arguments.
_NARY_FOLDS = {"sum_n": "add", "prod_n": "mul", "max_n": "max", "min_n": "min"}

BENCHMARK_UNARY = tuple(list(_UNARY_DEFINITIONS)[:27])
EXTRA_UNARY = tuple(list(_UNARY_DEFINITIONS)[27:])
BENCHMARK_BINARY = tuple(_BINARY_DEFINITIONS)
DEFAULT_NARY = tuple(_NARY_FOLDS)

# The 8 functions every search starts with (METHOD.md section 4).
BASELINES = ("elu", "relu", "selu", "sigmoid", "softplus", "softsign", "swish", "tanh")

_REGISTRY: dict[str, Operator] = {}
# Called after the registry changes, so caches keyed by operator names can be dropped.
_ON_CHANGE: list[Callable[[], None]] = []


def _bind(definition, xp):
  if xp is _HOST:
    def host_fn(*args):
      with np.errstate(all="ignore"):  # IEEE results (inf, NaN) are part of the space
        return definition(xp, *args)
    return host_fn
  return lambda *args: definition(xp, *args)


def _fold(binary_definition, xp):
  binary_fn = _bind(binary_definition, xp)

  def reduce(*args):
    result = args[0]
    for arg in args[1:]:
      result = binary_fn(result, arg)
    return result
  return reduce


def _host_from_jax(jax_fn):
  """Runs a user's jax.numpy operator in float64 on the host."""
  def host_fn(*args):
    with jax.enable_x64(True):
      return np.asarray(jax_fn(*(jnp.asarray(a, jnp.float64) for a in args)), np.float64)
  return host_fn


def _register_builtins():
  for name, definition in _UNARY_DEFINITIONS.items():
    _REGISTRY[name] = Operator(name, UNARY, _bind(definition, _JAX), _bind(definition, _HOST),
                               builtin=True)
  for name, definition in _BINARY_DEFINITIONS.items():
    _REGISTRY[name] = Operator(name, BINARY, _bind(definition, _JAX), _bind(definition, _HOST),
                               builtin=True)
  for name, binary_name in _NARY_FOLDS.items():
    definition = _BINARY_DEFINITIONS[binary_name]
    _REGISTRY[name] = Operator(name, NARY, _fold(definition, _JAX), _fold(definition, _HOST),
                               builtin=True)


_register_builtins()


def _normalize_arity(arity) -> str:
  aliases = {1: UNARY, 2: BINARY, "n": NARY, "nary": NARY, UNARY: UNARY, BINARY: BINARY,
             NARY: NARY}
  if isinstance(arity, bool) or arity not in aliases:
    raise ValueError(
        f"arity must be 1 / 'unary', 2 / 'binary' or 'n' / 'n-ary', got {arity!r}")
  return aliases[arity]


def register_operator(name: str, fn: Callable[..., jax.Array], arity,
                      *, safe_input: float = DEFAULT_SAFE_INPUT,
                      overwrite: bool = False) -> Operator:
  """Adds an operator to the language, usable in every expression from now on.

  Args:
    name: the name used in expressions, e.g. 'gaussian' for `gaussian(x)`.
    fn: a jax.numpy function of one (unary), two (binary) or two or more (n-ary) arrays,
      elementwise and dtype-preserving.
    arity: 1 or 'unary', 2 or 'binary', 'n' or 'n-ary'.
    safe_input: a value at which `fn` and its derivatives are finite; population
      evaluators feed it to branches whose result is discarded.
    overwrite: replace an existing user operator of that name (built-ins are never replaced).

  Returns:
    The registered Operator. Its float64 host form runs `fn` under jax's x64 mode.
  """
  if not isinstance(name, str) or not NAME_PATTERN.match(name):
    raise ValueError(f"operator name must be an identifier like 'gaussian', got {name!r}")
  if name in RESERVED:
    raise ValueError(f"{name!r} is reserved by the expression grammar")
  if not callable(fn):
    raise TypeError(f"fn for operator {name!r} must be callable, got {type(fn).__name__}")
  existing = _REGISTRY.get(name)
  if existing is not None and (existing.builtin or not overwrite):
    kind = "a built-in" if existing.builtin else "an existing"
    hint = "" if existing.builtin else " (pass overwrite=True to replace it)"
    raise ValueError(f"{name!r} is {kind} operator{hint}")
  operator = Operator(name, _normalize_arity(arity), fn, _host_from_jax(fn),
                      safe_input=float(safe_input))
  _REGISTRY[name] = operator
  for callback in _ON_CHANGE:
    callback()
  return operator


def get(name: str) -> Operator:
  """The operator called `name`; KeyError if there is none (the parser reports it nicely)."""
  return _REGISTRY[name]


def exists(name: str) -> bool:
  return name in _REGISTRY


def names(arity: str | None = None) -> tuple[str, ...]:
  """All registered operator names (of one arity, if given), in registration order."""
  if arity is not None:
    arity = _normalize_arity(arity)
  return tuple(n for n, op in _REGISTRY.items() if arity is None or op.arity == arity)


def resolve(selection: Sequence[str] | None, arity: str, default: Sequence[str]) -> tuple[str, ...]:
  """Validates a user's choice of operators for a placeholder; None gives `default`."""
  if selection is None:
    return tuple(default)
  if isinstance(selection, str):
    raise TypeError(f"{arity} operators must be a list of names, got the string {selection!r}")
  chosen = tuple(selection)
  for name in chosen:
    operator = _REGISTRY.get(name)
    if operator is None:
      raise ValueError(f"unknown operator {name!r} in the {arity} operators {list(chosen)}")
    if operator.arity != arity:
      raise ValueError(
          f"{name!r} is {operator.arity}, not {arity}, in the {arity} operators {list(chosen)}")
  if len(set(chosen)) != len(chosen):
    raise ValueError(f"repeated operator in the {arity} operators {list(chosen)}")
  if not chosen:
    raise ValueError(f"the {arity} operators are empty")
  return chosen
