"""Parsing, printing and compiling expressions; every malformed input gives ExpressionError."""

import pickle

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import actbench
from actbench.expr import compiler, operators
from actbench.expr.expression import MAX_DEPTH, Expr


def trees(max_leaves=12):
  """Random well-formed expression trees over the built-in operators."""
  unary = st.sampled_from(operators.BENCHMARK_UNARY + operators.EXTRA_UNARY)
  binary = st.sampled_from(operators.BENCHMARK_BINARY)
  nary = st.sampled_from(operators.DEFAULT_NARY)
  return st.recursive(
      st.just(Expr("x")),
      lambda children: st.one_of(
          st.builds(lambda op, a: Expr(op, (a,)), unary, children),
          st.builds(lambda op, a, b: Expr(op, (a, b)), binary, children, children),
          st.builds(lambda op, args: Expr(op, tuple(args)), nary,
                    st.lists(children, min_size=2, max_size=4))),
      max_leaves=max_leaves)


@hypothesis.given(trees())
def test_print_parse_round_trip(tree):
  text = str(tree)
  assert " " not in text
  assert actbench.parse(text) == tree
  assert str(actbench.parse(text)) == text
  assert hash(actbench.parse(text)) == hash(tree)


@hypothesis.given(trees(), st.randoms(use_true_random=False))
def test_whitespace_is_ignored(tree, rng):
  text = str(tree)
  pad = lambda: rng.choice(["", " ", "\t", "\n  "])
  spaced = "".join(pad() + c + pad() if c in "()," else c for c in text)
  assert actbench.parse(" " + spaced) == tree


@hypothesis.given(st.lists(st.sampled_from(
    list("(),x $-é") + ["relu", "max", "sum_n", "unary", "n-ary", "x(", "foo"]),
    max_size=20).map("".join))
def test_arbitrary_text_only_raises_expression_error(text):
  try:
    tree = actbench.parse(text)
  except actbench.ExpressionError as error:
    assert isinstance(error, ValueError)
    assert error.text == text and repr(text) in str(error)
  else:
    assert actbench.parse(str(tree)) == tree


def test_canonical_form_and_properties():
  tree = actbench.parse(" max( relu(x) ,cosh( elu (x)) ) ")
  assert str(tree) == "max(relu(x),cosh(elu(x)))"
  assert tree.op == "max" and len(tree.args) == 2
  assert tree.size == 6 and tree.depth == 4
  assert [str(n) for n in tree.nodes()][:3] == ["max(relu(x),cosh(elu(x)))", "relu(x)", "x"]
  assert actbench.parse(tree) is tree
  assert pickle.loads(pickle.dumps(tree)) == tree
  with pytest.raises(AttributeError):
    tree.op = "min"


@pytest.mark.parametrize("text, problem, position", [
    ("", "empty expression", 0),
    ("   ", "empty expression", 0),
    ("foo(x)", "unknown operator 'foo'", 0),
    ("max(relu(x),rleu(x))", "did you mean 'relu'", 12),
    ("relu(x,x)", "unary operator 'relu' takes 1 argument, got 2", 0),
    ("max(x)", "binary operator 'max' takes 2 arguments, got 1", 0),
    ("sum_n(x)", "takes at least 2 arguments, got 1", 0),
    ("max(x,", "expected an expression, found the end", 6),
    ("max(x", "unclosed '(' of 'max'", 0),
    ("relu(x))", "unexpected trailing text ')'", 7),
    ("relu(x) relu(x)", "unexpected trailing text 'relu(x)'", 8),
    ("max(x,)", "expected an expression, found ')'", 6),
    ("(x)", "expected an expression, found '('", 0),
    ("relu", "'relu' must be called", 0),
    ("y", "unknown name 'y'", 0),
    ("x(x)", "'x' is the input and takes no arguments", 0),
    ("relu(x;)", "unexpected character ';'", 6),
    ("relu(x x)", "expected ',' or ')', found 'x'", 7),
    ("unary(x)", "only allowed in a schema", 0),
])
def test_malformed_expressions(text, problem, position):
  with pytest.raises(actbench.ExpressionError) as info:
    actbench.parse(text)
  message = str(info.value)
  assert problem in message
  assert info.value.position == position
  assert repr(text) in message  # the input is quoted


@pytest.mark.parametrize("bad", [None, 3, 2.5, b"relu(x)", ["relu(x)"]])
def test_non_strings_are_expression_errors(bad):
  with pytest.raises(actbench.ExpressionError, match="must be a string"):
    actbench.parse(bad)
  with pytest.raises(actbench.ExpressionError, match="must be a string"):
    actbench.compile(bad)


def test_nesting_limit():
  deep_ok = "relu(" * (MAX_DEPTH - 1) + "x" + ")" * (MAX_DEPTH - 1)
  assert actbench.parse(deep_ok).depth == MAX_DEPTH
  too_deep = "relu(" * MAX_DEPTH + "x" + ")" * MAX_DEPTH
  with pytest.raises(actbench.ExpressionError, match="nesting too deep"):
    actbench.parse(too_deep)
  with pytest.raises(actbench.ExpressionError, match="nesting too deep"):
    actbench.parse("relu(" * 100_000 + "x" + ")" * 100_000)  # no RecursionError


def test_schema_parsing():
  schema = actbench.parse_schema("n-ary(unary(x), binary(x, relu(x)), x)")
  assert str(schema) == "n-ary(unary(x),binary(x,relu(x)),x)"
  assert [n.op for n in schema.placeholders()] == ["n-ary", "unary", "binary"]
  with pytest.raises(actbench.ExpressionError, match="placeholder 'binary' takes 2"):
    actbench.parse_schema("binary(x)")
  with pytest.raises(actbench.ExpressionError, match="not an activation function"):
    actbench.parse(schema)


def test_compile_any_shape_and_transformations():
  fn = actbench.compile("max(relu(x),cosh(elu(x)))")
  assert actbench.compile("max( relu(x), cosh(elu(x)) )") is fn  # cached: jit cache shared
  x = jnp.linspace(-2.0, 2.0, 24).reshape(2, 3, 4)
  expected = np.maximum(np.maximum(x, 0), np.cosh(np.where(x > 0, x, np.expm1(x))))
  np.testing.assert_allclose(fn(x), expected, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(fn)(x), expected, rtol=1e-6)
  np.testing.assert_allclose(jax.vmap(fn)(x), expected, rtol=1e-6)
  assert fn(jnp.float32(0.5)).shape == ()
  assert fn(np.arange(3)).dtype == jnp.float32  # integers become floats
  # grad and jvp agree with the analytic derivative: for x > 0, d/dx max(x, cosh x) = sinh x
  # where cosh x > x (always), so the derivative is sinh(x).
  np.testing.assert_allclose(jax.grad(fn)(1.5), np.sinh(1.5), rtol=1e-6)
  _, tangent = jax.jvp(fn, (jnp.float32(1.5),), (jnp.float32(2.0),))
  np.testing.assert_allclose(tangent, 2 * np.sinh(1.5), rtol=1e-6)
  assert fn.__name__ == "max(relu(x),cosh(elu(x)))"


def test_compile_shares_common_subtrees():
  calls = []
  operators.register_operator("test_counted", lambda x: calls.append(1) or x + 1, 1,
                              overwrite=True)
  fn = actbench.compile("mul(test_counted(x),test_counted(x))")
  np.testing.assert_allclose(fn(jnp.float32(2.0)), 9.0)
  assert len(calls) == 1


def test_nonfinite_values_where_the_mathematics_says():
  fn = actbench.compile("reciprocal(zero(x))")
  assert np.all(np.isposinf(fn(jnp.ones(5))))
  assert np.all(np.isnan(actbench.compile("pow(negative(one(x)),sigmoid(x))")(jnp.ones(3))))
  assert float(actbench.compile("reciprocal(x)")(0.0)) == np.inf


def test_normalize():
  fn = actbench.compile("relu(x)", normalize=True)
  assert fn.normalized and actbench.compile("relu(x)") is not fn
  nodes, weights = compiler.quadrature()
  with jax.enable_x64(True):
    values = np.asarray(fn(jnp.asarray(nodes)), np.float64)
  np.testing.assert_allclose(np.sum(weights * values), 0.0, atol=1e-6)
  np.testing.assert_allclose(np.sum(weights * values ** 2), 1.0, rtol=1e-6)
  # Against the closed form: relu has mean 1/sqrt(2 pi) and variance 1/2 - 1/(2 pi).
  mean, std = 1 / np.sqrt(2 * np.pi), np.sqrt(0.5 - 1 / (2 * np.pi))
  x = jnp.array([-1.0, 0.0, 2.0])
  np.testing.assert_allclose(fn(x), (np.maximum(x, 0) - mean) / std, atol=5e-3)
  # Smooth functions are exact: tanh is odd (mean 0); x is already standard.
  np.testing.assert_allclose(actbench.compile("identity(x)", normalize=True)(x), x, atol=1e-6)
  assert jax.jit(fn)(x).dtype == jnp.float32
  assert fn(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


@pytest.mark.parametrize("name, problem", [
    ("zero(x)", "constant"), ("one(x)", "constant"),
    ("exp(exp(exp(x)))", "not finite"), ("reciprocal(zero(x))", "not finite"),
])
def test_normalize_errors_name_the_function(name, problem):
  with pytest.raises(ValueError, match=problem) as info:
    actbench.compile(name, normalize=True)
  assert repr(name) in str(info.value)
