"""The population form: codes, one evaluator under lax.map and vmap, agreement with compile."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import actbench
from actbench.engine import population
from actbench.expr import features, space
from tests import reference


@pytest.fixture(scope="module")
def benchmark_space():
  names = list(space.enumerate(space.BENCHMARK_SCHEMA))
  encoding = population.Encoding.for_space(space.BENCHMARK_SCHEMA)
  return names, encoding, encoding.encode(names)


def test_codes_round_trip(benchmark_space):
  names, encoding, codes = benchmark_space
  assert codes.shape == (5103, 3) and codes.dtype == np.int32
  assert encoding.slots == ("binary", "unary", "unary")
  assert encoding.decode(codes) == names
  assert encoding.decode(codes[5]) == names[5]
  np.testing.assert_array_equal(codes[0], [0, 0, 0])
  hash(encoding)  # usable as a static jit argument


@pytest.mark.slow
def test_evaluator_equals_compiled_functions_over_the_benchmark_space(benchmark_space):
  names, encoding, codes = benchmark_space
  x = jnp.asarray(features.reference_points(), jnp.float32)
  mapped = jax.jit(lambda c: jax.lax.map(lambda row: encoding.apply(row, x), c))(codes)
  vmapped = jax.jit(jax.vmap(lambda row: encoding.apply(row, x)))(codes)
  compiled = np.stack([actbench.compile(name)(x) for name in names])
  # Under jit XLA contracts hard_sigmoid's 0.2 * x + 0.5 into one fused multiply-add, which
  # rounds once instead of twice; eager evaluation does not. Those rows agree to a few ulps
  # of their operands (amplified by cancellation or pow), the others to float32 rounding.
  fused = np.array(["hard_sigmoid" in name for name in names])
  for population_values in (mapped, vmapped):
    reference.assert_same_values(population_values[~fused], compiled[~fused], rtol=2e-6,
                                 atol=1e-30)
    reference.assert_same_values(population_values[fused], compiled[fused], rtol=1e-5,
                                 atol=1e-6)
  np.testing.assert_array_equal(mapped, vmapped)


def test_vmap_isolates_overflowing_branches():
  encoding, codes = population.encode(
      ["add(relu(x),zero(x))", "add(exp(x),zero(x))", "mul(elu(x),one(x))"])
  grad = jax.vmap(jax.grad(encoding.apply, argnums=1))
  for value, expected in [(100.0, [1.0, np.inf, 1.0]), (1e4, [1.0, np.inf, 1.0]),
                          (-1e4, [0.0, 0.0, 0.0])]:
    x = jnp.full((3,), value)
    np.testing.assert_array_equal(grad(codes, x), expected)
    np.testing.assert_array_equal(
        jax.lax.map(lambda args: jax.grad(encoding.apply, argnums=1)(*args), (codes, x)),
        expected)
  values = jax.vmap(encoding.apply)(codes, jnp.full((3,), 1e4))
  np.testing.assert_array_equal(values, [1e4, np.inf, 1e4])


def test_lax_map_runs_only_the_selected_operator():
  traced, runs = [], []

  def operator(x):
    traced.append(x.shape)  # Python runs at trace time only
    # At run time: the input this operator actually computes on, once per member evaluating it.
    jax.debug.callback(lambda v: runs.append(np.asarray(v).tolist()), x)
    return x

  actbench.register_operator("test_traced", operator, 1, overwrite=True)
  encoding, codes = population.encode(["test_traced(x)", "relu(x)", "relu(x)", "test_traced(x)"])
  assert encoding.unary.index("test_traced") != encoding.unary.index("relu")
  safe = float(actbench.operators.get("test_traced").safe_input)
  x = jnp.asarray([-2.0, -1.0, 0.5])
  assert safe not in x.tolist()  # so the inputs below tell the members apart
  # Tracing sees every branch once, not once per member; the scalar index then selects one at
  # run time, which shows in the jaxpr as a `cond` with one branch per operator (not a select
  # of all).
  jaxpr = jax.make_jaxpr(lambda c: jax.lax.map(lambda row: encoding.apply(row, x), c))(codes)
  assert "cond" in str(jaxpr) and traced == [(3,)]
  jaxpr_vmapped = jax.make_jaxpr(jax.vmap(lambda row: encoding.apply(row, x)))(codes)
  assert "cond" not in str(jaxpr_vmapped) and "select_n" in str(jaxpr_vmapped)
  expected = np.stack([x, jax.nn.relu(x), jax.nn.relu(x), x])

  # Under lax.map the operator runs for the two members that select it, on their input, and
  # never for the relu members.
  runs.clear()
  mapped = jax.jit(lambda c: jax.lax.map(lambda row: encoding.apply(row, x), c))(codes)
  jax.effects_barrier()
  assert runs == [x.tolist()] * 2
  np.testing.assert_array_equal(mapped, expected)
  # Under vmap it runs for every member: on x for those that select it, on its safe input for
  # the others; the values are the same.
  runs.clear()
  vmapped = jax.jit(jax.vmap(lambda row: encoding.apply(row, x)))(codes)
  jax.effects_barrier()
  assert sorted(runs) == sorted([x.tolist()] * 2 + [[safe] * 3] * 2)
  np.testing.assert_array_equal(vmapped, expected)


def test_grouped_runs_only_the_operators_its_group_selects():
  runs = []

  def operator(x):
    jax.debug.callback(lambda v: runs.append(np.asarray(v).tolist()), x)
    return x

  actbench.register_operator("test_grouped", operator, 1, overwrite=True)
  names = ["test_grouped(x)", "relu(x)", "tanh(x)", "relu(x)", "test_grouped(x)", "tanh(x)"]
  encoding, codes = population.encode(names)
  safe = float(actbench.operators.get("test_grouped").safe_input)
  x = jnp.asarray([-2.0, -1.0, 0.5])
  expected = np.stack([operator_value(name, x) for name in names])

  def member(row, present):
    return encoding.apply(row, x, present=present)

  for group_size, expected_runs in [
      # Sorted by code, groups of 2 are (test_grouped x2), (relu x2), (tanh x2): the operator
      # runs for its own two members only, as under lax.map.
      (2, [x.tolist()] * 2),
      # Groups of 3: the first holds both test_grouped members and a relu one, which computes
      # it on the safe input; the second group (relu, tanh, tanh) never runs it.
      (3, [x.tolist()] * 2 + [[safe] * 3]),
      # One group: every member runs it, as under vmap.
      (6, [x.tolist()] * 2 + [[safe] * 3] * 4)]:
    runs.clear()
    grouped = jax.jit(lambda c, size=group_size: population.over_members(
        member, (c,), (), "grouped", encoding=encoding, group_size=size))(codes)
    jax.effects_barrier()
    assert sorted(runs) == sorted(expected_runs), group_size
    np.testing.assert_array_equal(grouped, expected)  # in the members' order
  # Five members in groups of 2: sorted, (relu x2), (tanh x2), then the one test_grouped
  # member padded with a copy of itself, whose run is wasted and whose result is dropped.
  five = [0, 1, 2, 3, 5]
  runs.clear()
  grouped = jax.jit(lambda c: population.over_members(
      member, (c,), (), "grouped", encoding=encoding, group_size=2))(codes[five])
  jax.effects_barrier()
  assert runs == [x.tolist()] * 2
  np.testing.assert_array_equal(grouped, expected[five])


def operator_value(name, x):
  return x if name.startswith("test_grouped") else actbench.compile(name)(x)


@pytest.mark.parametrize("members, size, shape", [
    (6, 2, (3, 2)), (6, 4, (2, 3)), (7, 3, (3, 3)), (5, 8, (1, 5)), (128, 8, (16, 8)),
    (103, 8, (13, 8)), (12, 0, (1, 12))])
def test_group_shape(members, size, shape):
  assert population.group_shape(members, size) == shape


def test_encode_infers_schema_and_tables():
  encoding, codes = population.encode(
      ["sum_n(tanh(x),relu(x),x)", "max_n(relu(x),gelu(x),x)"])
  assert str(encoding.schema) == "n-ary(unary(x),unary(x),x)"
  assert encoding.unary == ("tanh", "relu", "gelu")  # registration order
  assert encoding.nary == ("sum_n", "max_n")
  np.testing.assert_array_equal(codes, [[0, 0, 1], [1, 1, 2]])
  x = jnp.linspace(-2, 2, 7)
  for row, name in zip(codes, ["sum_n(tanh(x),relu(x),x)", "max_n(relu(x),gelu(x),x)"]):
    np.testing.assert_allclose(encoding.apply(row, x), actbench.compile(name)(x), rtol=1e-6)


def test_schema_with_fixed_operators():
  encoding = population.Encoding.for_space("max(unary(x),x)", unary=["tanh", "elu"])
  codes = encoding.encode(["max(elu(x),x)", "max(tanh(x),x)"])
  np.testing.assert_array_equal(codes, [[1], [0]])
  x = jnp.array([-1.0, 0.5])
  np.testing.assert_allclose(encoding.apply(codes[0], x), [-0.63212055, 0.5], rtol=1e-6)


@pytest.mark.parametrize("names, schema, problem", [
    (["relu(x)", "max(x,x)"], None, "does not share the schema"),
    (["max(relu(x),x)"], "binary(unary(x),unary(x))", "stands where a unary operator"),
    (["max(relu(x),tanh(x))"], "min(unary(x),unary(x))", "stands where"),
    (["sum_n(x,x,x)"], "n-ary(x,x)", "has 3 arguments"),
])
def test_misfits_are_expression_errors(names, schema, problem):
  with pytest.raises(actbench.ExpressionError, match=problem):
    population.encode(names, schema=schema)


def test_operator_outside_table():
  encoding = population.Encoding.for_space("unary(x)", unary=["relu", "tanh"])
  with pytest.raises(actbench.ExpressionError, match="not among the encoding's unary"):
    encoding.encode(["gelu(x)"])
  with pytest.raises(ValueError, match="out of range"):
    encoding.decode([5])
  with pytest.raises(ValueError, match=r"codes must have shape \(1,\)"):
    encoding.apply(jnp.zeros((2, 1), jnp.int32), 1.0)


def test_dtypes_and_normalization():
  encoding, codes = population.encode(["add(relu(x),tanh(x))", "mul(sigmoid(x),gelu(x))"])
  x = jnp.linspace(-3, 3, 11)
  for dtype in (jnp.float32, jnp.bfloat16):
    assert encoding.apply(codes[0], x.astype(dtype)).dtype == dtype
  with jax.enable_x64(True):
    assert encoding.apply(codes[0], jnp.asarray(x, jnp.float64)).dtype == jnp.float64
  for row, name in zip(codes, ["add(relu(x),tanh(x))", "mul(sigmoid(x),gelu(x))"]):
    np.testing.assert_allclose(encoding.apply(row, x, normalize=True),
                               actbench.compile(name, normalize=True)(x), rtol=1e-4, atol=1e-5)
  # Not normalizable: NaN in the graph rather than an error.
  encoding, codes = population.encode(["add(zero(x),zero(x))"])
  assert np.all(np.isnan(jax.jit(lambda c: encoding.apply(c, x, normalize=True))(codes[0])))
  # The activation form models take.
  act = encoding.activation(codes[0])
  np.testing.assert_array_equal(act(x), jnp.zeros_like(x))
