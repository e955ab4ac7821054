"""Derivatives: every operator against float64 finite differences of the independent reference
(tests/reference.py), and the population form's custom-JVP gradients against jax.grad of the
compiled functions over the whole benchmark space."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import actbench
from actbench.engine import population
from actbench.expr import features, operators, space
from tests import reference

EPS64 = np.finfo(np.float64).eps


def run_compiled(fn, *args):
  """fn jitted and run, compiled with LLVM's optimizations off: the same XLA program (its HLO
  passes, fusion included, still run) in half the compile time, which dominates these tests.
  Results may differ from the default's by rounding (float32 tanh, for one, is implemented
  differently), which the float64 tolerances below absorb."""
  compiled = jax.jit(fn).lower(*args).compile({"xla_backend_optimization_level": 0})
  return jax.device_get(compiled(*args))


# ---------------------------------------------------------------------------------------------
# operators against finite differences (float64)

UNARY_POINTS = [-30.0, -15.0, -8.0, -5.0, -3.3, -2.6, -2.4, -1.7, -1.1, -0.7, -0.35, -0.12,
                -0.03, 0.04, 0.11, 0.37, 0.8, 1.3, 1.9, 2.45, 2.7, 3.6, 5.2, 8.5, 15.0, 30.0]
# Where an operator (or one of its derivatives, which the extrapolation below relies on) is not
# smooth: no finite difference step may straddle these.
KINKS = {"relu": [0.0], "abs": [0.0], "elu": [0.0], "selu": [0.0], "elish": [0.0],
         "leakyrelu": [0.0], "hard_sigmoid": [-2.5, 2.5], "reciprocal": [0.0]}
BINARY_VALUES = [-2.7, -1.3, -0.45, 0.3, 0.85, 1.6, 2.4, 3.1]
RTOL = 1e-7


def _step(x):
  """Small against |x| (near the singularities at 0) and against 1/|x| (Gaussian tails such as
  erfc's vary on the scale 1/|x|); 1e-3 in between."""
  return 1e-3 * max(min(abs(x), 1 / abs(x), 1.0), 1e-2) if x else 1e-5


def _derivative(fn, x, h):
  """Central differences of `fn` at x with steps h and h/2, Richardson-extrapolated (error
  O(h^4)), and a bound on their rounding error, all in float64."""
  def central(step):
    return (fn(x + step) - fn(x - step)) / (2 * step)
  values = [abs(fn(x + s)) for s in (-h, -h / 2, h / 2, h)]
  return (4 * central(h / 2) - central(h)) / 3, 16 * EPS64 * max(values) / h


def _assert_derivatives(name, actual, expected, rounding, where):
  actual = np.asarray(actual, np.float64)
  for a, e, r, w in zip(actual, expected, rounding, where):
    assert abs(a - e) <= RTOL * abs(e) + r, f"{name} at {w}: jax {a!r}, differences {e!r}"


def _binary_grid():
  return (np.repeat(BINARY_VALUES, len(BINARY_VALUES)),
          np.tile(BINARY_VALUES, len(BINARY_VALUES)))


NARY_ARGS = np.random.default_rng(2).uniform(-3, 3, (3, 20))  # distinct: no ties


@pytest.fixture(scope="module")
def jax_derivatives():
  """jax's float64 derivatives of every operator at the test points, from one jitted program:
  {unary name: d/dx at UNARY_POINTS}, {binary name: (d/da, d/db) on the grid of
  BINARY_VALUES}, {n-ary name: (d/darg0, d/darg1, d/darg2) at NARY_ARGS}."""
  for arity, names in ((operators.UNARY, reference.UNARY), (operators.BINARY, reference.BINARY),
                       (operators.NARY, reference.NARY)):  # every built-in operator is tested
    assert set(names) == {n for n in operators.names(arity) if operators.get(n).builtin}
  a, b = _binary_grid()
  with jax.enable_x64(True):
    def derivatives(x, a, b, args):
      unary = {name: jax.vmap(jax.grad(actbench.compile(f"{name}(x)")))(x)
               for name in reference.UNARY}
      binary = {name: jax.vmap(jax.grad(operators.get(name).jax_fn, argnums=(0, 1)))(a, b)
                for name in reference.BINARY}
      nary = {name: jax.vmap(jax.grad(operators.get(name).jax_fn, argnums=(0, 1, 2)))(*args)
              for name in reference.NARY}
      return unary, binary, nary
    result = run_compiled(derivatives, *(jnp.asarray(v, jnp.float64)
                                         for v in (UNARY_POINTS, a, b, NARY_ARGS)))
  assert all(leaf.dtype == np.float64 for leaf in jax.tree.leaves(result))
  return result


@pytest.mark.parametrize("name", list(reference.UNARY))
def test_unary_derivative_against_finite_differences(jax_derivatives, name):
  ref = reference.UNARY[name]
  actual, points, expected, rounding = [], [], [], []
  for x, d_jax in zip(UNARY_POINTS, jax_derivatives[0][name]):
    h = _step(x)
    if any(abs(x - k) < 4 * h for k in KINKS.get(name, [])):
      continue
    d, r = _derivative(ref, x, h)
    if not (math.isfinite(d) and all(math.isfinite(ref(x + s)) for s in (-h, h))):
      continue
    actual.append(d_jax)
    points.append(x)
    expected.append(d)
    rounding.append(r)
  assert len(points) >= len(UNARY_POINTS) - 2  # nothing but the kinks was skipped
  _assert_derivatives(name, actual, expected, rounding, points)


def _binary_cases(name):
  """Indices into the grid of (a, b) pairs where the reference is smooth in both arguments."""
  cases = []
  for index, (a, b) in enumerate(zip(*_binary_grid())):
    h = max(_step(a), _step(b))
    if name in ("max", "min") and abs(a - b) < 4 * h:
      continue  # a tie: not differentiable
    if name == "pow" and a <= 0:
      continue  # negative base: not real for non-integer exponents
    cases.append(index)
  return cases


@pytest.mark.parametrize("name", list(reference.BINARY))
def test_binary_partial_derivatives_against_finite_differences(jax_derivatives, name):
  ref = reference.BINARY[name]
  cases = _binary_cases(name)
  assert len(cases) >= 40
  grid = list(zip(*_binary_grid()))
  for argnum in (0, 1):
    expected, rounding = [], []
    for index in cases:
      u, v = grid[index]
      if argnum == 0:
        d, r = _derivative(lambda t, v=v: ref(t, v), u, _step(u))
      else:
        d, r = _derivative(lambda t, u=u: ref(u, t), v, _step(v))
      expected.append(d)
      rounding.append(r)
    actual = np.asarray(jax_derivatives[1][name][argnum])[cases]
    _assert_derivatives(f"d{name}/d{'ab'[argnum]}", actual, expected, rounding,
                        [grid[i] for i in cases])


@pytest.mark.parametrize("name", sorted(reference.NARY))
def test_nary_partial_derivatives_against_finite_differences(jax_derivatives, name):
  """Three arguments, all distinct (no ties for max_n, min_n)."""
  for argnum, actual in enumerate(jax_derivatives[2][name]):
    expected, rounding = [], []
    for column in NARY_ARGS.T:
      def partial(t, column=column, argnum=argnum):
        values = list(column)
        values[argnum] = t
        return float(reference.nary(name, *[np.array([v]) for v in values])[0])
      d, r = _derivative(partial, column[argnum], _step(column[argnum]))
      expected.append(d)
      rounding.append(r)
    _assert_derivatives(f"d{name}/darg{argnum}", actual, expected, rounding, NARY_ARGS.T)


# ---------------------------------------------------------------------------------------------
# the population form over the benchmark space

# Ordinary points, the kinks (0, hard_sigmoid's +-2.5), and large |x| where operators overflow
# (float64: exp overflows beyond 709.78).
SPECIAL_POINTS = [0.0, 1e-3, -1e-3, 0.3, -0.3, 0.5, -0.5, 1.0, -1.0, 1.7, -1.7, 2.5, -2.5, 3.0,
                  -3.0, 7.0, -7.0, 20.0, -20.0, 100.0, -100.0, 1e3, -1e3, 1e4, -1e4]
POINTS = np.concatenate([SPECIAL_POINTS, features.reference_points()[:39]])
# Relative to the sum of the magnitudes of the chain rule's two terms: float64 rounding
# amplified by the operators' conditioning (softsign's autodiff derivative at |x| = 1e4 cancels
# 4 digits; pow's log(a) near a = 1), with a margin; a wrong formula is off by far more.
POPULATION_RTOL = 1e-9
ABSOLUTE = 1e-5  # times POPULATION_RTOL: 1e-14, about 50 float64 ulps of 1


def _reverse_mode_reference(unary, binary, x):
  """jax.grad(actbench.compile(name)) at x for every name binary(u1(x),u2(x)) (binary major,
  then u1, u2), assembled as reverse mode computes it: the cotangents of u1 and u2 are
  jax.grad of the binary operator at (u1(x), u2(x)); each is pulled back through jax.vjp of
  the compiled unary function; the two are added (when u1 == u2, compile evaluates one node:
  its cotangents are added first). Returns (gradients, the sum of the two pulled-back terms'
  magnitudes and of an absolute allowance: the scale of rounding differences, the functions'
  values), each (names, points); and the gradients by the population form's convention, where
  an argument whose derivative is exactly 0 (a constant, a flat relu) contributes 0 even where
  the binary operator's partial is inf or NaN (reverse mode gives 0 * NaN = NaN there)."""
  n, m, p = len(unary), len(binary), x.shape[0]
  fns = [actbench.compile(f"{u}(x)") for u in unary]

  # Two programs: in one, XLA fuses the binary gradients into every consumer (4x the compile).
  def binary_gradients(x):
    values = jnp.stack([fn(x) for fn in fns])
    a = jnp.broadcast_to(values[:, None, :], (n, n, p)).ravel()
    b = jnp.broadcast_to(values[None, :, :], (n, n, p)).ravel()
    functions = jnp.stack([operators.get(name).jax_fn(a, b) for name in binary])
    return values, functions, [
        jax.vmap(jax.grad(operators.get(name).jax_fn, argnums=(0, 1)))(a, b) for name in binary]

  def pull_back(x, cotangents):
    # Each fn is elementwise: its vjp at x repeated row-wise pulls every row back at once.
    return [jax.vjp(fn, jnp.broadcast_to(x, c.shape))[1](c)[0]
            for fn, c in zip(fns, cotangents)]

  values, functions, partials = run_compiled(binary_gradients, x)
  da = np.stack([d[0] for d in partials]).reshape(m, n, n, p)  # (binary, u1, u2, point)
  db = np.stack([d[1] for d in partials]).reshape(m, n, n, p)
  with np.errstate(all="ignore"):
    cotangents = [np.concatenate([da[:, i].reshape(-1, p), db[:, :, i].reshape(-1, p),
                                  da[:, i, i] + db[:, i, i]]) for i in range(n)]
  pulled = run_compiled(pull_back, x, cotangents)
  still = np.stack(run_compiled(pull_back, x, [np.ones(p)] * n)) == 0  # u_i'(x) == 0
  first = np.stack([r[:m * n].reshape(m, n, p) for r in pulled], 1)  # u_i first
  second = np.stack([r[m * n:2 * m * n].reshape(m, n, p) for r in pulled], 2)  # u_i second
  shared = np.stack([r[2 * m * n:] for r in pulled], 1)  # u_i both: (binary, u_i, point)
  with np.errstate(all="ignore"):
    grads = first + second
    # Plus the absolute rounding of derivative formulas whose terms are of the size of 1 or
    # of u (tanh' = 1 - tanh^2 is 0 or 1e-16 at x = 20, depending on the implementation).
    size = np.maximum(np.abs(values), 1.0)
    absolute = np.abs(da) * size[None, :, None] + np.abs(db) * size[None, None]
    scale = np.abs(first) + np.abs(second) + ABSOLUTE * np.where(np.isfinite(absolute),
                                                                 absolute, 0.0)
    chain = (np.where(still[None, :, None], 0.0, first)
             + np.where(still[None, None, :], 0.0, second))
  grads[:, np.arange(n), np.arange(n)] = shared
  chain[:, np.arange(n), np.arange(n)] = np.where(still[None], 0.0, shared)
  return (grads.reshape(-1, p), scale.reshape(-1, p), functions.reshape(-1, p),
          chain.reshape(-1, p))


@pytest.fixture(scope="module")
def benchmark_gradients():
  """`Gradients`: d/dx under lax.map and under vmap, the reverse-mode reference, its rounding
  scale and the functions' values, (5103, P) float64 each, at POINTS; and
  jax.grad(actbench.compile(name)) of the covering names."""
  names = list(space.enumerate(space.BENCHMARK_SCHEMA))
  encoding = population.Encoding.for_space(space.BENCHMARK_SCHEMA)
  codes = encoding.encode(names)
  # The reference's layout: binary operator major, then the first and second unary operator.
  np.testing.assert_array_equal(codes, np.stack(np.meshgrid(
      np.arange(7), np.arange(27), np.arange(27), indexing="ij"), -1).reshape(-1, 3))
  with jax.enable_x64(True):
    x = jnp.asarray(POINTS, jnp.float64)

    def gradient(row):  # reverse mode through the custom JVP, as training differentiates
      return jax.grad(lambda v: encoding.apply(row, v).sum())(x)

    def grouped_gradient(row, present):
      return jax.grad(lambda v: encoding.apply(row, v, present=present).sum())(x)

    mapped = run_compiled(lambda c: jax.lax.map(gradient, c), codes)
    vmapped = run_compiled(jax.vmap(gradient), codes)
    # Groups of 7 sorted members: each runs 1-2 binary and up to 7 unary operators per slot.
    grouped = run_compiled(lambda c: population.over_members(
        grouped_gradient, (c,), (), "grouped", encoding=encoding, group_size=7), codes)
    expected, scale, values, chain = _reverse_mode_reference(encoding.unary, encoding.binary, x)
    compiled = run_compiled(lambda x: jnp.stack(
        [jax.vmap(jax.grad(actbench.compile(name)))(x) for name in _covering_names()]), x)
  for array in (mapped, vmapped, grouped, expected, values, compiled):
    assert array.dtype == np.float64
  return Gradients(names, mapped, vmapped, grouped, expected, scale, values, compiled, chain)


@dataclasses.dataclass
class Gradients:
  names: list
  mapped: np.ndarray
  vmapped: np.ndarray
  grouped: np.ndarray
  expected: np.ndarray
  scale: np.ndarray
  values: np.ndarray
  compiled: np.ndarray
  chain: np.ndarray  # `expected` by the population form's convention (see the reference)


def _undefined(values):
  """Where the function itself is not finite (0/0, 1/0): no derivative to speak of, so the
  population form and jax.grad may disagree there (NaN against 0, either way round)."""
  return ~np.isfinite(values)


def _assert_same_gradients(actual, expected, scale, names, allowed=None):
  """Non-finite (NaN or inf, either) at the same positions, except where `allowed`; finite
  values within POPULATION_RTOL of the scale of their chain-rule terms."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  finite = np.isfinite(expected)
  allowed = np.zeros(actual.shape, bool) if allowed is None else allowed
  bad = (np.isfinite(actual) != finite) & ~allowed
  assert not bad.any(), [(names[i], POINTS[j], actual[i, j], expected[i, j])
                         for i, j in zip(*np.nonzero(bad))][:10]
  with np.errstate(all="ignore"):
    error = np.where(finite & ~allowed, np.abs(actual - expected), 0.0)
    bad = error > POPULATION_RTOL * scale + np.finfo(np.float64).tiny
  assert not bad.any(), [(names[i], POINTS[j], actual[i, j], expected[i, j], scale[i, j])
                         for i, j in zip(*np.nonzero(bad))][:10]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["map", "vmap", "grouped"])
def test_population_gradients_over_the_benchmark_space(benchmark_gradients, strategy):
  """d/dx of `Encoding.apply` (reverse mode through its custom JVP; lax.map, vmap and
  population.over_members' groups with only their present operators over the codes) for all
  5,103 names of the benchmark space at 64 points (25 special ones: kinks,
  ties such as max(relu(x),abs(x)) at x > 0, overflow at |x| = 1e3 and 1e4; 39 standard normal
  ones), against jax.grad(actbench.compile(name)) assembled node by node, in float64.

  Why this suffices: every name is binary(u1(x),u2(x)), and reverse mode through compile's
  function is exactly the reference's computation: the binary operator's gradient pulled
  back through jax.vjp of the compiled unary functions, added (one compiled program for all
  names; 5,103 jit compilations would take minutes). That the reference is jax.grad of the
  compiled functions is checked literally by `test_covering_names_against_compiled_gradients`
  on names placing every operator in every slot. Everything the population form adds
  (switches over operators, masked unselected branches, the dual value-derivative evaluation,
  the custom JVP) is exercised on every name. float64 (the population form computes in the
  input's dtype) because float32 rounding, amplified by some derivatives' conditioning
  (float32 tanh' = 1 - tanh^2 is off by 4e-6 relative at x = 2.5), differs between two correct
  programs by more than a wrong formula might.

  Non-finite gradients must agree in position (NaN and inf count alike), except where the
  function's value is not finite (`_undefined`).
  """
  g = benchmark_gradients
  actual = {"map": g.mapped, "vmap": g.vmapped, "grouped": g.grouped}[strategy]
  assert actual.shape == g.expected.shape == (5103, POINTS.size)
  _assert_same_gradients(actual, g.chain, g.scale, g.names, _undefined(g.values))
  # Both strategies compute the same member-wise derivatives (fused differently: ulps).
  _assert_same_gradients(actual, g.mapped, g.scale, g.names)


def _covering_names():
  """Names with every unary operator once in each slot and every binary operator 3 or 4
  times, plus names whose two arguments are one node (compile evaluates shared subtrees once:
  their cotangents add) and ties."""
  unary, binary = operators.BENCHMARK_UNARY, operators.BENCHMARK_BINARY
  names = [f"{binary[i % 7]}({unary[i]}(x),{unary[(5 * i + 3) % 27]}(x))" for i in range(27)]
  return names + ["sub(tanh(x),tanh(x))", "div(erfc(x),erfc(x))", "max(relu(x),relu(x))",
                  "pow(cosh(x),cosh(x))", "min(abs(x),identity(x))", "max(relu(x),abs(x))"]


@pytest.mark.slow
def test_covering_names_against_compiled_gradients(benchmark_gradients):
  """jax.grad(actbench.compile(name)) itself (one jitted program, one trace over the names)
  equals the whole-space test's reference exactly in its non-finite positions, and within
  rounding elsewhere; and the population form's gradients agree with it as in that test."""
  g = benchmark_gradients
  rows = [g.names.index(str(actbench.parse(name))) for name in _covering_names()]
  covered = [g.names[r] for r in rows]
  _assert_same_gradients(g.compiled, g.expected[rows], g.scale[rows], covered)
  for population_grads in (g.mapped[rows], g.vmapped[rows], g.grouped[rows]):
    _assert_same_gradients(population_grads, g.chain[rows], g.scale[rows], covered,
                           _undefined(g.values[rows]))
  slots = [{actbench.parse(name).args[k].op for name in covered} for k in (0, 1)]
  assert slots[0] == slots[1] == set(operators.BENCHMARK_UNARY)
  assert {name.split("(")[0] for name in covered} == set(operators.BENCHMARK_BINARY)


# (name, x, the exact derivative, which jax.grad(actbench.compile(name)) returns)
NAN_GRADIENT_CASES = [
    ("pow(negative(x),one(x))", 1.0, -1.0),  # -x
    ("pow(sinh(x),one(x))", -1.0, math.cosh(1.0)),  # sinh(x)
    ("pow(log_sigmoid(x),one(x))", 1.0, 1 / (1 + math.e)),  # log_sigmoid(x)
    ("pow(identity(x),relu(x))", -1.0, 0.0),  # x ** 0 = 1 for x < 0
    ("pow(tanh(x),relu(x))", -0.5, 0.0),  # 1 for x < 0
    ("pow(reciprocal(x),zero(x))", -1.0, 0.0),  # 1
    ("pow(zero(x),square(x))", 0.5, 0.0),  # 0 for x != 0
]


def _case_positions(names):
  return [(names.index(name), int(np.flatnonzero(POINTS == x)[0]), derivative)
          for name, x, derivative in NAN_GRADIENT_CASES]


def test_compiled_gradient_is_exact_in_the_defect_cases(benchmark_gradients):
  """The cases of the defect below: jax.grad(actbench.compile(name)) (the reference, checked
  against it literally in test_covering_names_against_compiled_gradients) is the exact
  derivative there, and the functions are finite."""
  g = benchmark_gradients
  for row, column, derivative in _case_positions(g.names):
    assert g.expected[row, column] == pytest.approx(derivative, rel=1e-12, abs=1e-300)
    assert np.isfinite(g.values[row, column])


def test_zero_tangents_never_meet_infinite_partials(benchmark_gradients):
  """Finite functions whose inner derivative is 0 where pow's partial is inf or NaN (a
  constant or flat argument; a negative base): the exact derivative, as
  jax.grad(actbench.compile(name)) gives, not 0 * inf. (Regression: the population form's
  forward-mode derivative once made these NaN and the members fail.)"""
  g = benchmark_gradients
  for row, column, derivative in _case_positions(g.names):
    for population_grads in (g.mapped, g.vmapped, g.grouped):
      assert population_grads[row, column] == pytest.approx(
          derivative, rel=1e-12, abs=1e-300), (g.names[row], POINTS[column])
