"""Search-space enumeration, functional equivalence and output features."""

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import actbench
from actbench.expr import features, operators, space
from tests import reference


@pytest.fixture(scope="module")
def benchmark_names():
  return list(space.enumerate(space.BENCHMARK_SCHEMA))


@pytest.fixture(scope="module")
def benchmark_classes(benchmark_names):
  return space.equivalence_classes(benchmark_names)


def test_benchmark_space_enumeration(benchmark_names):
  assert len(benchmark_names) == 7 * 27 * 27 == space.size(space.BENCHMARK_SCHEMA)
  assert len(set(benchmark_names)) == len(benchmark_names)
  assert benchmark_names[0] == "add(zero(x),zero(x))"
  assert benchmark_names[1] == "add(zero(x),one(x))"
  assert benchmark_names[-1] == "min(hard_sigmoid(x),hard_sigmoid(x))"
  assert "max(relu(x),cosh(x))" in benchmark_names
  assert all(str(actbench.parse(n)) == n for n in benchmark_names[::97])  # canonical


@pytest.mark.parametrize("schema, unary, binary, nary, expected", [
    ("unary(unary(x))", None, None, None, 27 * 27),
    ("n-ary(unary(x),unary(x),unary(x))", None, None, None, 4 * 27 ** 3),
    ("unary(binary(unary(x),unary(x)))", None, None, None, 27 * 7 * 27 * 27),
    ("binary(unary(x),x)", ["relu", "tanh"], ["add"], None, 2),
    ("max(unary(x),x)", ["relu", "tanh", "gelu"], None, None, 3),
    ("n-ary(x,x)", None, None, ["sum_n"], 1),
    ("relu(x)", None, None, None, 1),
])
def test_sizes_match_enumeration(schema, unary, binary, nary, expected):
  names = list(space.enumerate(schema, unary, binary, nary))
  assert len(names) == expected == space.size(schema, unary, binary, nary)
  assert len(set(names)) == expected
  for name in names[:50]:
    actbench.parse(name)


def test_enumeration_order_and_operator_subsets():
  names = list(space.enumerate("binary(unary(x),x)", unary=["tanh", "relu"],
                               binary=["min", "add"]))
  assert names == ["min(tanh(x),x)", "min(relu(x),x)", "add(tanh(x),x)", "add(relu(x),x)"]


def test_large_spaces_stream_in_chunks():
  schema = "binary(unary(unary(x)),unary(unary(x)))"
  assert space.size(schema) == 7 * 27 ** 4  # 3.7 million names
  names = space.enumerate(schema)
  chunks = space.chunked(names, 1000)
  first, second = next(chunks), next(chunks)
  assert len(first) == len(second) == 1000
  assert first[0] == "add(zero(zero(x)),zero(zero(x)))"
  assert second[0] == list(itertools.islice(space.enumerate(schema), 1000, 1001))[0]
  assert list(space.chunked(range(5), 2)) == [[0, 1], [2, 3], [4]]


def test_bad_schemas():
  with pytest.raises(actbench.ExpressionError, match="unknown operator 'nary'"):
    list(space.enumerate("nary(x,x)"))
  with pytest.raises(actbench.ExpressionError, match="unclosed"):
    space.size("binary(unary(x),x")


def members_of(classes, name):
  return next(c for c in classes if name in c)


def test_method_equivalence_examples():
  classes = space.equivalence_classes(
      ["add(relu(x),zero(x))", "relu(x)", "min(tanh(x),sigmoid(x))", "min(sigmoid(x),tanh(x))",
       "exp(x)", "add(sinh(x),cosh(x))", "tanh(x)"])
  assert members_of(classes, "relu(x)") == ["relu(x)", "add(relu(x),zero(x))"]
  # Same size and length: the alphabetically first name represents the class.
  assert members_of(classes, "min(tanh(x),sigmoid(x))") == [
      "min(sigmoid(x),tanh(x))", "min(tanh(x),sigmoid(x))"]
  # In float64, rounded to float32, exp = sinh + cosh (float32 arithmetic kept them apart).
  assert members_of(classes, "exp(x)") == ["exp(x)", "add(sinh(x),cosh(x))"]
  assert members_of(classes, "tanh(x)") == ["tanh(x)"]
  assert len(classes) == 4


def test_nonfinite_patterns_and_signed_zero():
  classes = space.equivalence_classes([
      "reciprocal(zero(x))", "div(one(x),zero(x))", "negative(reciprocal(zero(x)))",
      "pow(negative(one(x)),sigmoid(x))", "sub(reciprocal(zero(x)),reciprocal(zero(x)))",
      "mul(zero(x),negative(x))", "zero(x)"])
  assert members_of(classes, "reciprocal(zero(x))") == [
      "reciprocal(zero(x))", "div(one(x),zero(x))"]  # +inf everywhere
  assert members_of(classes, "negative(reciprocal(zero(x)))") == [
      "negative(reciprocal(zero(x)))"]  # -inf is another function
  assert members_of(classes, "pow(negative(one(x)),sigmoid(x))") == [
      "pow(negative(one(x)),sigmoid(x))", "sub(reciprocal(zero(x)),reciprocal(zero(x)))"]
  # 0 * -x is -0 for positive x: equal to 0.
  assert members_of(classes, "zero(x)") == ["zero(x)", "mul(zero(x),negative(x))"]


def _reference_classes(names):
  """The names' equivalence classes from tests/reference.py's scalar float64 operators,
  computed as METHOD.md section 2 says: values at the reference points (the legacy generator,
  seed 0, clipped to [-5, 5]) in float64, rounded to float32; equal when NaN and inf positions
  and finite values agree, -0 equal to 0. Returns one frozenset of names per class.

  Names of the form binary(unary(x),unary(x)); each unary operator is evaluated once, each
  binary operator over every pair of unary rows with np.frompyfunc (about 2 s for 5,103 names).
  """
  x = np.clip(np.random.RandomState(0).normal(size=1000), -5, 5)
  parsed = [re.fullmatch(r"(\w+)\((\w+)\(x\),(\w+)\(x\)\)", name).groups() for name in names]
  unary = sorted({p[1] for p in parsed} | {p[2] for p in parsed})
  row_of = {name: i for i, name in enumerate(unary)}
  inner = np.stack([reference.unary(name, x) for name in unary])
  values = np.empty((len(names), x.size), np.float64)
  for op in sorted({p[0] for p in parsed}):
    pairs = [i for i, p in enumerate(parsed) if p[0] == op]
    with np.errstate(all="ignore"):  # the scalar functions take their own limits
      table = np.frompyfunc(reference.BINARY[op], 2, 1)(inner[:, None], inner[None, :])
    table = table.astype(np.float64)
    values[pairs] = table[[row_of[parsed[i][1]] for i in pairs],
                          [row_of[parsed[i][2]] for i in pairs]]
  with np.errstate(over="ignore"):
    rounded = values.astype(np.float32)  # beyond float32's range: +-inf
  rounded[rounded == 0] = 0.0  # -0 is 0
  rounded[np.isnan(rounded)] = np.nan  # one NaN bit pattern
  keys = rounded.view(np.dtype((np.void, 4 * x.size)))[:, 0]
  _, inverse = np.unique(keys, return_inverse=True)
  classes = {}
  for name, key in zip(names, inverse.ravel().tolist()):
    classes.setdefault(key, set()).add(name)
  return {frozenset(members) for members in classes.values()}


def test_benchmark_space_classes(benchmark_names, benchmark_classes):
  members = [m for c in benchmark_classes for m in c]
  assert sorted(members) == sorted(benchmark_names)  # a partition
  # The same partition as an independent float64 reference (scalar operators, NumPy
  # rounding), hence the same count.
  expected = _reference_classes(benchmark_names)
  assert len(benchmark_classes) == len(expected)
  assert {frozenset(c) for c in benchmark_classes} == expected
  # Cross-check of the figure: float64 merges more than the paper's float32 accounting (2,913).
  assert len(expected) == 2791
  firsts = [c[0] for c in benchmark_classes]
  assert len(set(firsts)) == len(firsts)
  # Every class's outputs are identical and differ from every other class's.
  rows = space.canonical_outputs(features.outputs(firsts))
  assert len({r.tobytes() for r in rows}) == len(firsts)
  for members_ in benchmark_classes[:200]:
    rows = space.canonical_outputs(features.outputs(members_))
    assert all(r.tobytes() == rows[0].tobytes() for r in rows)


def test_representatives_are_deterministic_and_simplest(benchmark_names, benchmark_classes):
  shuffled = list(benchmark_names)
  np.random.RandomState(1).shuffle(shuffled)
  again = space.equivalence_classes(shuffled, chunk_size=777)
  assert sorted(c[0] for c in again) == sorted(c[0] for c in benchmark_classes)
  classes = space.equivalence_classes(["add(relu(x),zero(x))", "relu(x)", "relu(x)"])
  assert classes == [["relu(x)", "add(relu(x),zero(x))"]]  # simplest first, repeats once
  assert space.representatives(["mul(one(x),tanh(x))", "tanh(x)", "relu(x)"]) == [
      "tanh(x)", "relu(x)"]


def test_single_string_is_rejected():
  with pytest.raises(TypeError, match="wrap it in a list"):
    space.equivalence_classes("relu(x)")
  with pytest.raises(TypeError, match="wrap it in a list"):
    features.outputs("relu(x)")


def test_malformed_name_in_a_list():
  with pytest.raises(actbench.ExpressionError, match=r"'relu\(x'"):
    space.equivalence_classes(["tanh(x)", "relu(x"])


def test_reference_points():
  points = features.reference_points()
  assert points.shape == (1000,) and points.dtype == np.float64
  raw = np.random.RandomState(0).normal(size=1000)
  np.testing.assert_array_equal(points, np.clip(raw, -5, 5))
  assert points[0] == pytest.approx(1.764052345967664)
  assert not points.flags.writeable


def test_outputs_are_float64_rounded_to_float32():
  names = ["relu(x)", "max(relu(x),cosh(elu(x)))", "sub(exp(x),expm1(x))", "gelu(x)"]
  values = features.outputs(names)
  assert values.shape == (4, 1000) and values.dtype == np.float32
  with jax.enable_x64(True):
    x = jnp.asarray(features.reference_points())
    for row, name in zip(values, names):
      expected = np.asarray(actbench.compile(name)(x)).astype(np.float32)
      np.testing.assert_allclose(row, expected, rtol=1e-7, atol=0)
  # sub(exp, expm1) is exactly 1 in float64 then float32; float32 arithmetic is not.
  np.testing.assert_array_equal(values[2], 1.0)
  chunked = features.outputs(names * 3, chunk_size=5)
  np.testing.assert_array_equal(chunked, np.tile(values, (3, 1)))


def test_normalized_outputs():
  values = features.outputs(["tanh(x)", "zero(x)", "exp(exp(exp(x)))", "relu(x)"],
                            normalize=True)
  np.testing.assert_allclose(
      values[3], actbench.compile("relu(x)", normalize=True)(
          jnp.asarray(features.reference_points(), jnp.float32)), rtol=1e-5, atol=1e-6)
  assert np.all(np.isfinite(values[0]))
  assert np.all(np.isnan(values[1])) and np.all(np.isnan(values[2]))


def test_outputs_of_user_operator_in_float64():
  operators.register_operator("test_cube", lambda x: x * x * x, 1, overwrite=True)
  values = features.outputs(["test_cube(x)", "mul(x,square(x))"])
  np.testing.assert_array_equal(values[0], values[1])
  assert space.equivalence_classes(["test_cube(x)", "mul(x,square(x))"]) == [
      ["test_cube(x)", "mul(x,square(x))"]]
