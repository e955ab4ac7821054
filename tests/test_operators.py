"""Every operator against an independent float64 reference, at ordinary and edge inputs, in
both backends (jax in float32/float64/bfloat16, NumPy on the host), plus gradients."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import actbench
from actbench.expr import operators
from tests import reference

EDGES = [0.0, 1e-8, -1e-8, 5.0, -5.0, 50.0, -50.0, 1e4, -1e4, math.nan, math.inf, -math.inf]
ORDINARY = [-3.7, -1.0, -0.5, -0.1, 0.3, 1.0, 1.5, 2.9]
POINTS = np.array(EDGES + ORDINARY)
# Inputs where every unary operator's value and derivative are mathematically finite
# (for those operators whose domain allows it): gradients must be finite there.
GRADIENT_POINTS = [1e-8, -1e-8, 5.0, -5.0, 50.0, -50.0, 1e4, -1e4] + ORDINARY
# Operators that legitimately overflow (value or derivative) at large |x|.
OVERFLOWING = {"exp", "sinh", "cosh", "expm1", "square"}


assert_matches = reference.assert_same_values


def in_float32(values):
  with np.errstate(over="ignore"):
    return np.asarray(values, np.float64).astype(np.float32)


def test_operator_inventory():
  assert len(operators.BENCHMARK_UNARY) == 27
  assert operators.EXTRA_UNARY == ("elish", "leakyrelu", "mish", "gelu")
  assert len(operators.names(operators.UNARY)) >= 31
  assert operators.BENCHMARK_BINARY == ("add", "sub", "mul", "div", "pow", "max", "min")
  assert operators.DEFAULT_NARY == ("sum_n", "prod_n", "max_n", "min_n")
  assert set(reference.UNARY) == set(operators.BENCHMARK_UNARY + operators.EXTRA_UNARY)


@pytest.mark.parametrize("name", list(reference.UNARY))
def test_unary_float32_against_reference(name):
  expected = reference.unary(name, in_float32(POINTS).astype(np.float64))
  actual = actbench.compile(f"{name}(x)")(jnp.asarray(POINTS, jnp.float32))
  assert actual.dtype == jnp.float32
  # Values beyond float32's range must be inf in float32 too.
  assert_matches(actual, in_float32(expected), rtol=2e-6)


@pytest.mark.parametrize("name", list(reference.UNARY))
def test_unary_float64_against_reference(name):
  expected = reference.unary(name, POINTS)
  with jax.enable_x64(True):
    actual = actbench.compile(f"{name}(x)")(jnp.asarray(POINTS, jnp.float64))
    assert actual.dtype == jnp.float64
  assert_matches(actual, expected, rtol=1e-13)
  host = operators.get(name).host_fn(POINTS.copy())
  assert_matches(host, expected, rtol=1e-13)


@pytest.mark.parametrize("name", list(reference.UNARY))
def test_unary_bfloat16_keeps_dtype(name):
  x = jnp.asarray(ORDINARY, jnp.bfloat16)
  actual = actbench.compile(f"{name}(x)")(x)
  assert actual.dtype == jnp.bfloat16
  expected = reference.unary(name, np.asarray(x, np.float64))
  assert_matches(actual, expected, rtol=2e-2)


PAIRS = [(a, b) for a in EDGES + [-2.0, 2.5, 3.0] for b in EDGES + [-2.0, 0.5, 3.0]]


@pytest.mark.parametrize("name", list(reference.BINARY))
def test_binary_against_reference(name):
  a = np.array([p[0] for p in PAIRS])
  b = np.array([p[1] for p in PAIRS])
  expected = reference.binary(name, a, b)
  with jax.enable_x64(True):
    fn = operators.get(name).jax_fn
    assert_matches(fn(jnp.asarray(a), jnp.asarray(b)), expected, rtol=1e-13)
  assert_matches(operators.get(name).host_fn(a, b), expected, rtol=1e-13)
  actual = fn(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
  expected32 = reference.binary(name, in_float32(a), in_float32(b))
  # XLA:CPU flushes float32 subnormals to zero (1e-8 ** 5 = 1e-40 becomes 0).
  assert_matches(actual, in_float32(expected32), rtol=2e-6, atol=np.finfo(np.float32).tiny)


def test_pow_semantics():
  pow_ = actbench.compile("pow(x,square(x))")  # x ** (x * x)
  values = np.asarray(pow_(jnp.array([-2.0, 2.0, 0.5, -0.5])))
  np.testing.assert_allclose(values[:3], [16.0, 16.0, 0.5 ** 0.25], rtol=1e-6)
  assert np.isnan(values[3])  # negative base, non-integer exponent
  assert float(actbench.compile("pow(zero(x),negative(one(x)))")(1.0)) == math.inf


@pytest.mark.parametrize("name", sorted(reference.NARY))
def test_nary_folds_over_any_count(name):
  args = [np.array([1.5, -2.0, math.nan]), np.array([0.5, 4.0, 1.0]), np.array([-3.0, 2.0, 2.0]),
          np.array([2.0, -1.0, 0.0])]
  for count in (2, 3, 4):
    expected = reference.nary(name, *args[:count])
    assert_matches(operators.get(name).jax_fn(*map(jnp.asarray, args[:count])), expected, 1e-6)
    assert_matches(operators.get(name).host_fn(*args[:count]), expected, 1e-13)


def test_documented_constants_and_definitions():
  x = jnp.array([-2.0, 1.0, 3.0])
  np.testing.assert_allclose(actbench.compile("hard_sigmoid(x)")(x), [0.1, 0.7, 1.0], rtol=1e-6)
  assert not np.allclose(actbench.compile("hard_sigmoid(x)")(x), jax.nn.hard_sigmoid(x))
  np.testing.assert_allclose(
      actbench.compile("selu(x)")(x), jax.nn.selu(x), rtol=1e-6)  # jax uses the same constants
  np.testing.assert_allclose(
      actbench.compile("gelu(x)")(x), jax.nn.gelu(x, approximate=False), rtol=1e-6)
  assert not np.allclose(actbench.compile("gelu(x)")(x), jax.nn.gelu(x, approximate=True),
                         rtol=1e-6, atol=0)
  np.testing.assert_allclose(actbench.compile("leakyrelu(x)")(x), [-0.02, 1.0, 3.0], rtol=1e-6)


@pytest.mark.parametrize("name", list(reference.UNARY))
def test_gradients_finite_at_edges(name):
  points = [p for p in GRADIENT_POINTS if not (name in OVERFLOWING and abs(p) >= 50)]
  if name == "reciprocal":
    points = [p for p in points if abs(p) > 1e-6]  # 1/x^2 overflows float32 near 0
  fn = actbench.compile(f"{name}(x)")
  grads = jax.vmap(jax.grad(fn))(jnp.asarray(points, jnp.float32))
  assert np.all(np.isfinite(grads)), dict(zip(points, np.asarray(grads)))


@pytest.mark.parametrize("name", ["elu", "selu", "elish"])
def test_unselected_branch_does_not_poison(name):
  # The negative branch, expm1, overflows at 1e4; the positive branch is selected there.
  grad = jax.grad(actbench.compile(f"{name}(x)"))(jnp.float32(1e4))
  assert np.isfinite(grad) and grad > 0.9
  grad = jax.grad(actbench.compile(f"{name}(x)"))(jnp.float32(-1e4))
  assert np.isfinite(grad) and abs(grad) < 1e-3


def test_register_operator_is_usable_everywhere():
  name = "test_gaussian"
  operators.register_operator(name, lambda x: jnp.exp(-x * x), 1)
  fn = actbench.compile(f"max({name}(x),relu(x))")
  np.testing.assert_allclose(fn(jnp.array([0.0, 2.0])), [1.0, 2.0], rtol=1e-6)
  # Host float64 evaluation and the population form see it too.
  np.testing.assert_allclose(actbench.features.outputs([f"{name}(x)"])[0],
                             np.exp(-actbench.features.reference_points() ** 2), rtol=1e-6)
  assert name in operators.names(operators.UNARY)
  with pytest.raises(ValueError, match="existing"):
    operators.register_operator(name, jnp.sin, 1)
  operators.register_operator(name, jnp.sin, 1, overwrite=True)
  np.testing.assert_allclose(actbench.compile(f"{name}(x)")(1.0), math.sin(1.0), rtol=1e-6)


def test_register_binary_and_nary():
  operators.register_operator("test_hypot", jnp.hypot, "binary")
  operators.register_operator("test_mean_n", lambda *a: sum(a) / len(a), "n")
  np.testing.assert_allclose(actbench.compile("test_hypot(x,one(x))")(3.0), math.sqrt(10),
                             rtol=1e-6)
  np.testing.assert_allclose(actbench.compile("test_mean_n(x,one(x),zero(x))")(5.0), 2.0)
  with pytest.raises(actbench.ExpressionError, match="takes 2 arguments"):
    actbench.parse("test_hypot(x)")


@pytest.mark.parametrize("name, arity, error", [
    ("relu", 1, "built-in"), ("x", 1, "reserved"), ("unary", 1, "reserved"),
    ("bad name", 1, "identifier"), ("", 1, "identifier"), ("ok_name", 3, "arity"),
])
def test_register_operator_rejects(name, arity, error):
  with pytest.raises(ValueError, match=error):
    operators.register_operator(name, jnp.sin, arity)


def test_operator_selection_validation():
  assert actbench.space.size("unary(x)", unary=["relu", "tanh"]) == 2
  with pytest.raises(ValueError, match="unknown operator 'nope'"):
    actbench.space.size("unary(x)", unary=["relu", "nope"])
  with pytest.raises(ValueError, match="'add' is binary, not unary"):
    actbench.space.size("unary(x)", unary=["add"])
  with pytest.raises(TypeError, match="list of names"):
    actbench.space.size("unary(x)", unary="relu")
