"""Tests for actbench.models.coatnet (CoAtNet-0 and its parts).

XLA:CPU compiles dominate the runtime, so architecture facts of CoAtNet-0 (bfloat16 computation
included) are checked by tracing only (`jax.eval_shape`, `jax.make_jaxpr`); the computed checks
use a narrow CoAtNet (TINY: every block kind, downsampling and identity, at small widths) with
NumPy parameters, and share one compiled program.
"""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from actbench.models import coatnet
from actbench.fisher import kfac
from tests import model_helpers
from tests.model_helpers import keys as _keys
from tests.model_helpers import normal as _normal
from tests.model_helpers import param_count as _param_count

# Variables drawn by NumPy (nothing to compile): He-normal kernels, non-trivial norms and
# position biases.
_init = functools.partial(model_helpers.numpy_variables, offsets=("bias", "mean", "table"),
                          scale_jitter=0.1)
# (output, variables, shapes and dtypes the activation saw), abstract: one trace. No exp or
# logistic in the activation: see test_softmax_and_gate_are_not_the_activation.
_trace = functools.partial(model_helpers.trace, act=jnp.sin)



# S1 and S3 have an identity block after the downsampling one; widths change at every stage.
TINY = dict(depths=(2, 2, 1, 2, 1), dims=(8, 16, 24, 32, 48), head_dim=8)


def _coatnet0(**kwargs):
  return coatnet.CoAtNet0(act=jax.nn.gelu, **kwargs)


# ---------------------------------------------------------------------------------------------
# architecture (traced only)


def _expected_params(num_classes=1000, size=224, depths=(2, 2, 3, 5, 2),
                     dims=(64, 96, 192, 384, 768), head_dim=32):
  """CoAtNet's parameter count, from the architecture as the module docstring states it."""
  def conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)

  def dense(cin, cout):
    return cin * cout + cout

  def norm(c):
    return 2 * c

  total = conv(3, 3, dims[0], bias=False) + norm(dims[0]) + conv(3, dims[0], dims[0])
  cin = dims[0]
  for stage in (1, 2):
    for i in range(depths[stage]):
      hidden, squeezed = 4 * cin, cin // 4
      total += (norm(cin) + conv(1, cin, hidden, bias=False) + norm(hidden)
                + 9 * hidden + norm(hidden)  # depthwise, no bias
                + dense(hidden, squeezed) + dense(squeezed, hidden)
                + conv(1, hidden, dims[stage]) + (conv(1, cin, dims[stage]) if i == 0 else 0))
      cin = dims[stage]
  for stage in (3, 4):
    side = size // 2**(stage + 1)
    dim = dims[stage]
    for _ in range(depths[stage]):
      total += (norm(cin) + (conv(1, cin, dim) if cin != dim else 0)
                + 3 * dense(cin, dim) + dense(dim, dim)
                + (2 * side - 1)**2 * (dim // head_dim)
                + norm(dim) + dense(dim, 4 * dim) + dense(4 * dim, dim))
      cin = dim
  return total + norm(cin) + dense(cin, num_classes)


def test_coatnet0_parameter_count():
  expected = _expected_params()
  assert expected == 24_242_484
  assert abs(expected - 25e6) / 25e6 < 0.05  # the paper's 25M
  out, variables, _ = _trace(_coatnet0(num_classes=1000), (1, 224, 224, 3))
  assert set(variables) == {"params", "batch_stats"}
  assert _param_count(variables["params"]) == expected
  # The stem's norm, then per MBConv block: input, after expand, after depthwise.
  bn_widths = [64, 64, 256, 256, 96, 384, 384, 96, 384, 384, 192, 768, 768, 192, 768, 768]
  assert _param_count(variables["batch_stats"]) == 2 * sum(bn_widths)
  assert out.shape == (1, 1000)
  # TINY's count follows the same rules.
  _, variables, _ = _trace(coatnet.CoAtNet(act=jax.nn.gelu, **TINY), (1, 64, 64, 3))
  assert _param_count(variables["params"]) == _expected_params(10, size=64, **TINY)


def test_activation_sites():
  b = 2
  for train in (False, True):
    _, _, seen = _trace(_coatnet0(), (b, 64, 64, 3), train=train)
    shapes = [shape for shape, _ in seen]
    assert len(shapes) == 1 + 3 * (2 + 3) + (5 + 2) == 23
    # Stem (between its convs); per MBConv block: after expand, after the (strided) depthwise
    # conv, the SE reduction.
    assert shapes[:7] == [(b, 32, 32, 64),
                          (b, 32, 32, 256), (b, 16, 16, 256), (b, 16),  # S1 downsampling
                          (b, 16, 16, 384), (b, 16, 16, 384), (b, 24)]  # S1 identity
    assert shapes[7:10] == [(b, 16, 16, 384), (b, 8, 8, 384), (b, 24)]
    assert shapes[10:16] == [(b, 8, 8, 768), (b, 8, 8, 768), (b, 48)] * 2
    assert shapes[16:] == [(b, 4, 4, 4 * 384)] * 5 + [(b, 2, 2, 4 * 768)] * 2  # the MLPs


def test_softmax_and_gate_are_not_the_activation():
  """The SE gates stay sigmoid and the attention stays softmax whatever `act` is."""
  def count(jaxpr, counts):
    for eqn in jaxpr.eqns:
      counts[eqn.primitive.name] = counts.get(eqn.primitive.name, 0) + 1
      for param in eqn.params.values():
        for sub in (param if isinstance(param, (list, tuple)) else [param]):
          if isinstance(sub, jax.extend.core.ClosedJaxpr):
            count(sub.jaxpr, counts)
          elif isinstance(sub, jax.extend.core.Jaxpr):
            count(sub, counts)
    return counts

  x = jnp.zeros((2, 64, 64, 3))
  variables = jax.eval_shape(lambda: _coatnet0().init(_keys(), x))
  for act in (jnp.sin, lambda v: v * v):
    counts = count(jax.make_jaxpr(
        lambda v, act=act: coatnet.CoAtNet0(act=act).apply(v, x))(variables).jaxpr, {})
    assert counts.get("logistic") == 5  # one gate per MBConv block
    assert counts.get("exp") == 7  # one softmax per transformer block
    assert "tanh" not in counts and "erf" not in counts  # no GELU left anywhere


def test_relative_position_table_follows_input_size():
  for size, (s3, s4) in [(64, (4, 2)), (96, (6, 3)), (224, (14, 7))]:
    variables = jax.eval_shape(lambda s=size: _coatnet0().init(_keys(), jnp.zeros((1, s, s, 3))))
    params = variables["params"]
    for stage, side, heads, depth in [(3, s3, 12, 5), (4, s4, 24, 2)]:
      for i in range(depth):
        table = params[f"s{stage}_block{i}"]["Attention_0"]["relative_position_bias"]["table"]
        assert table.shape == ((2 * side - 1)**2, heads)
  # Not square: (2H-1)(2W-1) rows.
  variables = jax.eval_shape(lambda: _coatnet0().init(_keys(), jnp.zeros((1, 128, 64, 3))))
  table = variables["params"]["s4_block0"]["Attention_0"]["relative_position_bias"]["table"]
  assert table.shape == ((2 * 4 - 1) * (2 * 2 - 1), 24)


def test_relative_position_index():
  height, width = 3, 4
  index = coatnet.relative_position_index(height, width)
  positions = [(y, x) for y in range(height) for x in range(width)]  # row-major, as the model
  rows = {}
  for i, (yi, xi) in enumerate(positions):
    for j, (yj, xj) in enumerate(positions):
      assert index[i, j] == (yi - yj + height - 1) * (2 * width - 1) + (xi - xj + width - 1)
      rows.setdefault((yi - yj, xi - xj), set()).add(int(index[i, j]))
  # One row per offset, a different row for each of the (2H-1)(2W-1) offsets.
  assert all(len(r) == 1 for r in rows.values())
  assert sorted(r.pop() for r in rows.values()) == list(range((2 * height - 1) * (2 * width - 1)))


def test_attention_adds_the_bias_of_each_offset():
  """With q = k = 0 the logits are the bias alone; v and the output projection are identity."""
  height, width, heads, dim = 2, 3, 2, 4
  x = _normal((1, height, width, dim), seed=3)
  table = np.arange((2 * height - 1) * (2 * width - 1) * heads, dtype=np.float32).reshape(-1, heads)
  table = 0.37 * np.sin(table)
  zero = {"kernel": jnp.zeros((dim, dim)), "bias": jnp.zeros(dim)}
  identity = {"kernel": jnp.eye(dim), "bias": jnp.zeros(dim)}
  params = {"query": zero, "key": zero, "value": identity, "out": identity,
            "relative_position_bias": {"table": jnp.asarray(table)}}
  out = jax.jit(coatnet.Attention(dim, heads).apply)({"params": params}, x)

  tokens = np.asarray(x).reshape(height * width, dim)
  positions = [(y, x_) for y in range(height) for x_ in range(width)]
  expected = np.zeros_like(tokens)
  for h in range(heads):
    channels = slice(h * dim // heads, (h + 1) * dim // heads)
    for i, (yi, xi) in enumerate(positions):
      logits = np.array([table[(yi - yj + height - 1) * (2 * width - 1) + xi - xj + width - 1, h]
                         for yj, xj in positions])
      weights = np.exp(logits - logits.max())
      expected[i, channels] = (weights / weights.sum()) @ tokens[:, channels]
  np.testing.assert_allclose(np.asarray(out).reshape(height * width, dim), expected, rtol=1e-5,
                             atol=1e-6)


def test_bfloat16_computation_traced():
  out, variables, seen = _trace(_coatnet0(dtype=jnp.bfloat16), (2, 64, 64, 3), train=True)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  assert {dtype for _, dtype in seen} == {jnp.dtype(jnp.bfloat16)}
  assert out.shape == (2, 10) and out.dtype == jnp.float32


@pytest.mark.parametrize("shape", [(1, 65, 64, 3), (1, 48, 48, 3), (1, 32, 32, 3),
                                   (1, 64, 96 + 8, 3)])
def test_rejects_bad_input_sizes(shape):
  size = f"{shape[1]}x{shape[2]}"
  with pytest.raises(ValueError, match=f"multiples of 32.*got {size}"):
    _trace(_coatnet0(), shape)


def test_rejects_bad_widths():
  with pytest.raises(ValueError, match="head_dim"):
    _trace(_coatnet0(dims=(64, 96, 192, 384, 760)), (1, 64, 64, 3))


def test_fisher_features_cover_every_conv_and_dense():
  model = _coatnet0()
  x = jnp.zeros((2, 64, 64, 3))
  variables = jax.eval_shape(lambda: model.init(_keys(), x))
  layers, uncovered = kfac.find_layers(model, variables, x)
  kinds = [layer.kind for layer in layers]
  # stem 2 convs; MBConv 5 layers + shortcut conv in 2 blocks; transformer 6 Dense + shortcut
  # conv in 2 blocks; the classifier.
  assert kinds.count("depthwise_conv") == 5
  assert kinds.count("conv") == 2 + 2 * 5 + 2 + 2
  assert kinds.count("dense") == 2 * 5 + 6 * 7 + 1
  assert len(layers) == 2 + 5 * 5 + 2 + 6 * 7 + 2 + 1 == 74
  reasons = {u.reason for u in uncovered}
  assert reasons == {f"{kind} weights are not Dense or Conv kernels"
                     for kind in ("BatchNorm", "LayerNorm", "RelativePositionBias")}
  total = _param_count(variables["params"])
  assert sum(layer.num_weights for layer in layers) + sum(u.num_weights for u in uncovered) == total
  covered = {layer.path for layer in layers}
  for path, _ in jax.tree_util.tree_flatten_with_path(variables["params"])[0]:
    names = [p.key for p in path]
    if names[-1] == "kernel":
      assert "/".join(names[:-1]) in covered


# ---------------------------------------------------------------------------------------------
# computation (TINY, one compiled program for the three tests below)


@pytest.fixture(scope="module")
def population_run():
  """A population of 2 under lax.map with im2col convolutions (the CPU engine's path), in
  training mode with drop path 0.5, each member with its own activation, parameters and
  dropout key; and member 1 applied alone with XLA's convolution.

  The batch is 4 copies of one image: without drop path a member's 4 rows of logits would be
  equal (the batch is its own statistics); per-example drop masks make them differ.
  """
  x = jnp.tile(2.0 + _normal((1, 64, 64, 3), seed=1), (4, 1, 1, 1))
  make = functools.partial(coatnet.CoAtNet, drop_path_rate=0.5, **TINY)
  members = [_init(make(act=jax.nn.relu), x, seed) for seed in range(2)]
  stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *members)
  codes = jnp.arange(2)
  keys = jax.random.split(jax.random.key(7, impl="rbg"), 2)

  def apply_member(code, variables, key, implementation):
    model = make(act=lambda v: jax.lax.switch(code, [jax.nn.gelu, jnp.tanh], v),
                 conv_implementation=implementation)
    return model.apply(variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])

  @jax.jit
  def run(codes, stacked, keys):
    mapped = jax.lax.map(lambda a: apply_member(*a, "im2col"), (codes, stacked, keys))
    member = jax.tree.map(lambda leaf: leaf[1], (codes, stacked, keys))
    alone = apply_member(*member, "xla")
    stem = nn.Conv(8, (3, 3), strides=2, padding=1, use_bias=False).apply(
        {"params": member[1]["params"]["stem_conv0"]}, x)
    return mapped, alone, stem

  mapped, alone, stem = run(codes, stacked, keys)
  return dict(x=x, members=members, mapped=mapped, alone=alone, stem=stem)


@pytest.mark.slow
def test_population_under_lax_map_and_implementations_agree(population_run):
  mapped, alone = population_run["mapped"], population_run["alone"]
  logits = mapped[0]
  assert logits.shape == (2, 4, 10) and logits.dtype == jnp.float32
  assert np.isfinite(logits).all()
  assert not np.allclose(logits[0], logits[1])
  chex.assert_trees_all_close(jax.tree.map(lambda leaf: leaf[1], mapped), alone, rtol=2e-4,
                              atol=2e-4)


@pytest.mark.slow
def test_train_mode_updates_batch_stats(population_run):
  old = population_run["members"][1]["batch_stats"]
  new = population_run["alone"][1]["batch_stats"]
  assert jax.tree.structure(old) == jax.tree.structure(new)
  for before, after in zip(jax.tree.leaves(old), jax.tree.leaves(new)):
    assert not np.allclose(before, after)  # every statistic moves
  chex.assert_trees_all_close(  # momentum 0.9
      new["BatchNorm_0"]["mean"],
      0.9 * old["BatchNorm_0"]["mean"] + 0.1 * population_run["stem"].mean(axis=(0, 1, 2)),
      rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_drop_path(population_run):
  x, variables = population_run["x"], population_run["members"][0]
  keys = {"dropout": jax.random.key(5)}

  def jaxpr(rate, train, rngs):
    model = coatnet.CoAtNet(act=jax.nn.gelu, drop_path_rate=rate, **TINY)
    return str(jax.make_jaxpr(lambda v: model.apply(
        v, x, train=train, rngs=rngs, mutable=["batch_stats"]))(variables))

  # Identity in eval mode and at rate 0: the very same program as without drop path.
  assert jaxpr(0.5, False, keys) == jaxpr(0.0, False, {})
  assert jaxpr(0.0, True, keys) == jaxpr(0.0, True, {})  # no 'dropout' rng used either
  assert jaxpr(0.5, True, keys) != jaxpr(0.0, True, {})
  # In training, equal images get different logits: their residual branches were dropped
  # differently (the rows would be equal at rate 0).
  for member_logits in np.asarray(population_run["mapped"][0]):
    assert len({tuple(np.round(row, 4)) for row in member_logits}) > 1
