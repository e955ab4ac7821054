"""Tests for actbench.models.layers (the im2col convolution) and actbench.models.

XLA:CPU compiles dominate the runtime here, so the tests compile little: parameters of the layer
tests are deterministic NumPy values (a JAX sampler compiles anew per shape), architecture facts
are checked by tracing only (`jax.eval_shape`), and each jitted function is built once.
"""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from actbench.models import layers
from actbench import models
from tests import model_helpers
from tests.model_helpers import keys as _keys
from tests.model_helpers import normal as _normal
from tests.model_helpers import numpy_variables as _init
from tests.model_helpers import param_count as _param_count


def _fixed(shape):
  """Deterministic, non-trivial float32 values of `shape`."""
  values = 0.3 * np.cos(1.7 * np.arange(int(np.prod(shape))))
  return jnp.asarray(values.reshape(shape), jnp.float32)


def _trace(model, shape, train=False):
  """(output, variables, dtypes the activation saw per call), all abstract: nothing compiles."""
  out, variables, seen = model_helpers.trace(model, shape, train)
  return out, variables, [dtype for _, dtype in seen]


def _dropout_key(seed):
  # 'rbg' keys compile far faster than threefry ones on XLA:CPU.
  return jax.random.key(seed, impl="rbg")


# ---------------------------------------------------------------------------------------------
# layers.Conv


def _conv_pair(features=4, **kwargs):
  """The 'xla' and the 'im2col' convolution with the same fields."""
  return [layers.Conv(features, implementation=impl, **kwargs) for impl in ("xla", "im2col")]


def _assert_same_conv(xla_conv, im2col_conv, x, grads=False, tol=1e-5):
  """Same parameter structure as nn.Conv; same outputs (and gradients) on fixed parameters."""
  parent = nn.Conv(**{f: getattr(xla_conv, f) for f in (
      "features", "kernel_size", "strides", "padding", "kernel_dilation", "feature_group_count",
      "use_bias", "dtype")})
  shapes = [jax.tree.map(lambda a: (a.shape, a.dtype),
                         jax.eval_shape(m.init, jax.random.key(0), x))
            for m in (parent, xla_conv, im2col_conv)]
  assert shapes[0] == shapes[1] == shapes[2]
  variables = jax.tree.map(lambda a: _fixed(a[0]), shapes[0],
                           is_leaf=lambda a: isinstance(a, tuple))

  def outputs(module, variables, x):
    if not grads:
      return module.apply(variables, x)

    def loss(variables, x):
      y = module.apply(variables, x).astype(jnp.float32)
      return jnp.sum(_fixed(y.shape) * y)

    return module.apply(variables, x), jax.grad(loss, argnums=(0, 1))(variables, x)

  reference, result = jax.jit(
      lambda v, x: [outputs(m, v, x) for m in (xla_conv, im2col_conv)])(variables, x)
  chex.assert_trees_all_equal_shapes_and_dtypes(result, reference)
  chex.assert_trees_all_close(result, reference, rtol=tol, atol=tol)


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_im2col_matches_xla(kernel, stride, padding, use_bias):
  x = _normal((2, 9, 8, 3), seed=1)
  convs = _conv_pair(kernel_size=(kernel, kernel), strides=stride, padding=padding,
                     use_bias=use_bias)
  _assert_same_conv(*convs, x)


@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("stride", [1, 2])
def test_im2col_matches_xla_depthwise(stride, multiplier):
  channels = 6
  x = _normal((2, 7, 7, channels), seed=2)
  convs = _conv_pair(features=channels * multiplier, kernel_size=(3, 3), strides=stride,
                     feature_group_count=channels)
  assert [c.effective_implementation for c in convs] == ["xla", "im2col"]
  _assert_same_conv(*convs, x)


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=(3, 3), feature_group_count=2, features=6),
    dict(kernel_size=(3, 3), padding=((2, 0), (1, -1))),
    dict(kernel_size=(3, 3), padding=1, strides=2),
    dict(kernel_size=(3, 2), strides=(2, 1), kernel_dilation=(1, 2)),
    dict(kernel_size=(3, 3), padding="CIRCULAR"),
    dict(kernel_size=(3,), padding="CAUSAL"),
], ids=["grouped", "explicit_pads", "int_pad_stride2", "rect_dilated", "circular", "conv1d"])
def test_im2col_matches_xla_other_settings(kwargs):
  kwargs = dict(kwargs)
  features = kwargs.pop("features", 4)
  x = _normal((2, 8, 8, 4), seed=3)
  _assert_same_conv(*_conv_pair(features, **kwargs), x)


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=(3, 3), strides=2),
    dict(kernel_size=(3, 3), feature_group_count=4, features=8),
], ids=["stride2", "depthwise"])
def test_im2col_gradients_match_xla(kwargs):
  kwargs = dict(kwargs)
  features = kwargs.pop("features", 4)
  _assert_same_conv(*_conv_pair(features, **kwargs), _normal((2, 7, 7, 4), seed=4), grads=True)


def test_im2col_matches_xla_bfloat16():
  x = _normal((2, 8, 8, 8), seed=5)
  convs = _conv_pair(16, kernel_size=(3, 3), strides=2, dtype=jnp.bfloat16)
  params = jax.eval_shape(convs[0].init, jax.random.key(0), x)
  assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  # outputs are bfloat16; bfloat16 has 8 significant bits.
  _assert_same_conv(*convs, x, tol=5e-2)


# (id, input shape, nn.Conv fields): strides, the paddings nn.Conv has (SAME, VALID, explicit
# pairs, an int, CIRCULAR, REFLECT, CAUSAL), kernel dilations, feature groups and depthwise, in
# 1-D, 2-D and 3-D, with 0, 1 and 2 batch dimensions.
_FLAX_CASES = [
    ("same", (2, 9, 8, 4), {"features": 5, "kernel_size": (3, 3), "padding": "SAME"}),
    ("same_stride2", (2, 9, 8, 4), {"features": 5, "kernel_size": (3, 3), "strides": 2}),
    ("same_even_kernel_stride2", (2, 9, 8, 4),
     {"features": 5, "kernel_size": (2, 2), "strides": 2}),
    ("same_4x4_stride3", (2, 9, 8, 4), {"features": 3, "kernel_size": (4, 4), "strides": 3}),
    ("valid_5x5_stride2", (2, 9, 8, 4),
     {"features": 5, "kernel_size": (5, 5), "strides": 2, "padding": "VALID"}),
    ("valid_1x1_stride2_no_bias", (2, 9, 8, 4),
     {"features": 5, "kernel_size": (1, 1), "strides": 2, "padding": "VALID",
      "use_bias": False}),
    ("explicit_pads", (2, 9, 8, 4),
     {"features": 5, "kernel_size": (3, 3), "strides": (1, 2), "padding": ((2, 0), (1, -1))}),
    ("int_pad_stride2", (2, 9, 8, 4),
     {"features": 5, "kernel_size": (3, 3), "strides": 2, "padding": 2}),
    ("circular", (2, 9, 8, 4), {"features": 5, "kernel_size": (3, 3), "padding": "CIRCULAR"}),
    ("circular_even_dilated_stride2", (2, 9, 8, 4),
     {"features": 5, "kernel_size": (2, 3), "strides": 2, "kernel_dilation": 2,
      "padding": "CIRCULAR"}),
    ("reflect", (2, 9, 8, 4), {"features": 5, "kernel_size": (3, 3), "padding": "REFLECT"}),
    ("dilated_same", (2, 9, 8, 4),
     {"features": 5, "kernel_size": (3, 3), "kernel_dilation": 2}),
    ("dilated_rect_valid", (2, 9, 8, 4),
     {"features": 5, "kernel_size": (3, 2), "strides": (2, 1), "kernel_dilation": (1, 3),
      "padding": "VALID"}),
    ("grouped", (2, 9, 8, 4),
     {"features": 6, "kernel_size": (3, 3), "feature_group_count": 2}),
    ("grouped_dilated_stride2", (2, 9, 8, 4),
     {"features": 4, "kernel_size": (3, 3), "strides": 2, "kernel_dilation": 2, "padding": 1,
      "feature_group_count": 2}),
    ("depthwise", (2, 9, 8, 4),
     {"features": 4, "kernel_size": (3, 3), "feature_group_count": 4}),
    ("depthwise_x2_stride2", (2, 9, 8, 4),
     {"features": 8, "kernel_size": (3, 3), "strides": 2, "padding": 1,
      "feature_group_count": 4}),
    ("depthwise_dilated_valid", (2, 9, 8, 4),
     {"features": 4, "kernel_size": (3, 3), "kernel_dilation": 2, "padding": "VALID",
      "feature_group_count": 4}),
    ("depthwise_circular", (2, 9, 8, 4),
     {"features": 8, "kernel_size": (3, 3), "padding": "CIRCULAR", "feature_group_count": 4}),
    ("conv1d_causal_dilated", (2, 11, 4),
     {"features": 5, "kernel_size": (3,), "padding": "CAUSAL", "kernel_dilation": 2}),
    ("conv1d_stride3", (2, 11, 4), {"features": 5, "kernel_size": 4, "strides": 3}),
    ("conv3d_grouped", (2, 5, 6, 4, 4),
     {"features": 6, "kernel_size": (2, 3, 3), "strides": (1, 2, 1),
      "feature_group_count": 2}),
    ("no_batch", (7, 7, 4), {"features": 5, "kernel_size": (3, 3), "strides": 2}),
    ("two_batch_dims", (2, 3, 7, 7, 4),
     {"features": 4, "kernel_size": (3, 3), "feature_group_count": 4}),
]


def test_im2col_matches_flax_conv():
  """layers.Conv(implementation='im2col') against flax.linen.Conv itself, both given the same
  NumPy kernel and bias, over every case of _FLAX_CASES: same parameter shapes, same outputs
  to float32 rounding. One compiled program for all cases."""
  rng = np.random.default_rng(11)
  cases = []
  for name, shape, fields in _FLAX_CASES:
    flax_conv = nn.Conv(**fields)
    im2col_conv = layers.Conv(**fields, implementation="im2col")
    assert im2col_conv.effective_implementation == "im2col", name
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    abstract = jax.eval_shape(flax_conv.init, jax.random.key(0), x)
    assert jax.tree.map(lambda a: a.shape, jax.eval_shape(
        im2col_conv.init, jax.random.key(0), x)) == jax.tree.map(lambda a: a.shape, abstract)
    params = jax.tree.map(
        lambda a: jnp.asarray(rng.standard_normal(a.shape) / 3, jnp.float32), abstract)
    cases.append((name, flax_conv, im2col_conv, params, x))

  @jax.jit
  def outputs(all_params, xs):
    return [(flax_conv.apply(p, x), im2col_conv.apply(p, x))
            for (_, flax_conv, im2col_conv, _, _), p, x in zip(cases, all_params, xs)]

  results = outputs([c[3] for c in cases], [c[4] for c in cases])
  for (name, *_), (expected, actual) in zip(cases, results):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, name
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5, err_msg=name)


def test_conv_without_batch_dimension_and_with_two():
  x = _normal((2, 3, 6, 6, 2), seed=6)
  _assert_same_conv(*_conv_pair(kernel_size=(3, 3)), x)
  _assert_same_conv(*_conv_pair(kernel_size=(3, 3)), x[0, 0])


def test_conv_initializes_like_flax_conv():
  x = jnp.ones((1, 6, 6, 3))
  init = jax.jit(lambda m: m.init(_dropout_key(0), x), static_argnums=0)
  expected = init(nn.Conv(4, (3, 3)))
  for impl in ("xla", "im2col"):
    chex.assert_trees_all_equal(init(layers.Conv(4, (3, 3), implementation=impl)), expected)


def test_extract_patches_order_matches_kernel():
  x = _normal((2, 7, 7, 3), seed=7)
  conv = layers.Conv(5, (3, 3), strides=2, use_bias=False, implementation="xla")
  kernel = _fixed((3, 3, 3, 5))

  @jax.jit
  def both(x, kernel):
    patches = layers.extract_patches(x, (3, 3), strides=2, padding="SAME")
    return patches, conv.apply({"params": {"kernel": kernel}}, x)

  patches, expected = both(x, kernel)
  assert patches.shape == (2, 4, 4, 27)
  chex.assert_trees_all_close(patches @ kernel.reshape(-1, 5), expected, rtol=1e-5, atol=1e-5)


def test_implementation_choice():
  assert layers.resolve_implementation("auto", backend="cpu") == "im2col"
  assert layers.resolve_implementation("auto", backend="gpu") == "xla"
  assert layers.resolve_implementation("auto", backend="tpu") == "xla"
  assert layers.resolve_implementation("xla", backend="cpu") == "xla"
  assert layers.resolve_implementation("im2col", backend="tpu") == "im2col"
  with pytest.raises(ValueError, match="im2col"):
    layers.resolve_implementation("fft")
  expected = "im2col" if jax.default_backend() == "cpu" else "xla"
  assert layers.Conv(4, (3, 3)).effective_implementation == expected
  # No im2col path for input dilation (transposed convolution): falls back to XLA.
  conv = layers.Conv(4, (3, 3), input_dilation=2, padding=1, implementation="im2col")
  assert conv.effective_implementation == "xla"
  model = models.SmallCNN(act=jax.nn.relu, conv_implementation="xla")
  assert layers.describe_implementations(model, jnp.zeros((1, 8, 8, 1))) == {
      "Conv_0": "xla", "Conv_1": "xla"}
  model = models.SmallCNN(act=jax.nn.relu, conv_implementation="im2col")
  assert set(layers.describe_implementations(model, jnp.zeros((1, 8, 8, 1))).values()) == {
      "im2col"}


# ---------------------------------------------------------------------------------------------
# models: architecture (traced only)


def _conv_params(kernel, cin, cout, bias=True):
  return kernel * kernel * cin * cout + (cout if bias else 0)


def test_allcnnc_parameter_count():
  expected = (_conv_params(3, 3, 96) + _conv_params(3, 96, 96)
              + _conv_params(3, 96, 96)  # stride 2
              + _conv_params(3, 96, 192) + _conv_params(3, 192, 192)
              + _conv_params(3, 192, 192)  # stride 2
              + _conv_params(3, 192, 192)  # VALID
              + _conv_params(1, 192, 192) + _conv_params(1, 192, 10))
  assert expected == 1_369_738
  out, variables, _ = _trace(models.AllCNNC(act=jax.nn.relu, num_classes=10), (2, 32, 32, 3))
  assert set(variables) == {"params"}
  assert _param_count(variables["params"]) == expected
  chex.assert_shape(out, (2, 10))


def test_allcnnc_batch_norm_variant():
  _, plain, _ = _trace(models.AllCNNC(act=jax.nn.relu), (2, 32, 32, 3))
  _, variables, seen = _trace(models.AllCNNC(act=jax.nn.relu, use_batch_norm=True),
                              (2, 32, 32, 3), train=True)
  hidden_widths = [96, 96, 96, 192, 192, 192, 192, 192]
  # The hidden convs lose their bias and gain a norm with scale and offset; the last conv is
  # unchanged.
  assert _param_count(variables["params"]) == (
      _param_count(plain["params"]) - sum(hidden_widths) + 2 * sum(hidden_widths))
  assert _param_count(variables["batch_stats"]) == 2 * sum(hidden_widths)
  assert len(seen) == 8


def _resnet_param_count(depth, num_classes=10):
  n = (depth - 2) // 6
  total = _conv_params(3, 3, 16, bias=False) + 2 * 16  # stem conv, norm scale and offset
  cin = 16
  for width in (16, 32, 64):
    for _ in range(n):
      total += _conv_params(3, cin, width, bias=False) + 2 * width
      total += _conv_params(3, width, width, bias=False) + 2 * width
      cin = width  # option A shortcuts have no parameters
  return total + 64 * num_classes + num_classes


def test_resnet56_parameter_count():
  expected = _resnet_param_count(56)
  assert expected == 853_018
  out, variables, _ = _trace(models.ResNet56(act=jax.nn.relu), (2, 32, 32, 3))
  assert _param_count(variables["params"]) == expected
  # mean and variance for each normalized channel: the stem, then two norms per block.
  assert _param_count(variables["batch_stats"]) == 2 * (16 + 2 * 9 * (16 + 32 + 64))
  chex.assert_shape(out, (2, 10))
  _, variables, _ = _trace(models.ResNetCIFAR(act=jax.nn.relu, depth=20), (2, 32, 32, 3))
  assert _param_count(variables["params"]) == _resnet_param_count(20)


@pytest.mark.parametrize("name,shape,sites", [
    ("small_cnn", (2, 8, 8, 1), 3),
    ("allcnnc", (2, 32, 32, 3), 8),
    ("resnet20", (2, 32, 32, 3), 1 + 2 * 9),
    ("resnet56", (2, 32, 32, 3), 1 + 2 * 27),
])
def test_activation_applied_at_every_site(name, shape, sites):
  model = models.get_model(name, act=jax.nn.relu)
  for train in (False, True):
    assert len(_trace(model, shape, train=train)[2]) == sites


def test_every_weighted_layer_is_interceptable():
  """The Fisher features find layers by intercepting nn.Conv / nn.Dense calls, once each."""
  seen = []

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and isinstance(context.module, (nn.Conv, nn.Dense)):
      seen.append(type(context.module))
    return next_fun(*args, **kwargs)

  for model, shape, convs, denses in [
      (models.SmallCNN(act=jax.nn.relu), (2, 8, 8, 1), 2, 2),
      (models.AllCNNC(act=jax.nn.relu), (2, 32, 32, 3), 9, 0),
      (models.ResNetCIFAR(act=jax.nn.relu, depth=8), (2, 32, 32, 3), 7, 1),
  ]:
    seen.clear()
    with nn.intercept_methods(interceptor):
      jax.eval_shape(lambda m=model, s=shape: m.init(_keys(), jnp.zeros(s)))
    assert seen.count(layers.Conv) == convs
    assert seen.count(nn.Dense) == denses
    assert len(seen) == convs + denses


@pytest.mark.parametrize("name,shape", [("small_cnn", (2, 8, 8, 1)), ("resnet20", (2, 8, 8, 3)),
                                        ("allcnnc", (2, 16, 16, 3))])
def test_bfloat16_computation(name, shape):
  model = models.get_model(name, act=jax.nn.relu, dtype=jnp.bfloat16)
  out, variables, seen = _trace(model, shape, train=True)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  assert set(seen) == {jnp.dtype(jnp.bfloat16)}
  assert out.dtype == jnp.float32 and out.shape == (2, 10)  # logits come back in float32


def test_get_model_registry():
  assert isinstance(models.get_model("small_cnn", act=jax.nn.relu), models.SmallCNN)
  allcnnc = models.get_model("allcnnc", act=jax.nn.relu, num_classes=100)
  assert isinstance(allcnnc, models.AllCNNC) and allcnnc.num_classes == 100
  resnet56 = models.get_model("resnet56", act=jax.nn.relu)
  assert isinstance(resnet56, models.ResNetCIFAR) and resnet56.depth == 56
  assert models.get_model("resnet20", act=jax.nn.relu).depth == 20
  with pytest.raises(ValueError, match="allcnnc.*resnet56.*small_cnn"):
    models.get_model("vgg16", act=jax.nn.relu)


def test_resnet_rejects_bad_depth():
  with pytest.raises(ValueError, match="6n\\+2"):
    _trace(models.ResNetCIFAR(act=jax.nn.relu, depth=21), (1, 8, 8, 3))


# ---------------------------------------------------------------------------------------------
# models: computation


def test_zero_activation_makes_output_constant():
  x = jnp.stack([_normal((8, 8, 1), seed=0), _normal((8, 8, 1), seed=1)])
  variables = _init(models.SmallCNN(act=jax.nn.relu), x)

  @jax.jit
  def outputs(variables, x):
    return [models.SmallCNN(act=act).apply(variables, x) for act in (jnp.zeros_like, jax.nn.relu)]

  zero_act, relu = outputs(variables, x)
  chex.assert_trees_all_equal(zero_act[0], zero_act[1])
  assert not np.allclose(relu[0], relu[1])


def _coded_act(code):
  """A population member's activation: data (an integer code), not Python structure."""
  return lambda x: jax.lax.switch(code, [jax.nn.relu, jnp.tanh, jnp.sin], x)


@pytest.mark.parametrize("name,shape,train,conv", [
    ("small_cnn", (5, 8, 8, 1), False, "im2col"),  # the CPU path: im2col inside lax.map
    ("allcnnc", (3, 12, 12, 3), True, "xla"),  # dropout: each member has its own rng
    ("resnet8", (3, 8, 8, 3), True, "xla"),  # batch norm: each member has its own statistics
])
@pytest.mark.slow
def test_population_under_lax_map(name, shape, train, conv):
  # XLA's convolution compiles faster; the implementations agree (tests above).
  if name == "resnet8":
    make = functools.partial(models.ResNetCIFAR, depth=8, conv_implementation=conv)
  else:
    make = functools.partial(models.get_model, name, conv_implementation=conv)
  x = _normal(shape)
  codes = jnp.arange(3)
  # Parameters do not depend on the activation.
  members = [_init(make(act=jax.nn.relu), x, seed) for seed in range(3)]
  stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *members)
  dropout_keys = jax.random.split(_dropout_key(9), 3)

  def apply_member(code, member_variables, dropout_key):
    model = make(act=_coded_act(code))
    return model.apply(member_variables, x, train=train, rngs={"dropout": dropout_key},
                       mutable=["batch_stats"])

  population = jax.jit(lambda *a: jax.lax.map(lambda args: apply_member(*args), a))(
      codes, stacked, dropout_keys)
  apply_alone = jax.jit(apply_member)
  for i in range(3):
    member = jax.tree.map(lambda leaf, i=i: leaf[i], (codes, stacked, dropout_keys))
    chex.assert_trees_all_close(jax.tree.map(lambda leaf, i=i: leaf[i], population),
                                apply_alone(*member), rtol=1e-5, atol=1e-5)
  logits = population[0]
  assert not np.allclose(logits[0], logits[1]) and not np.allclose(logits[1], logits[2])


def test_implementations_agree_on_models():
  x = _normal((2, 8, 8, 3))
  make = functools.partial(models.ResNetCIFAR, act=jax.nn.swish, depth=8)
  variables = _init(make(), x)
  xla, im2col = jax.jit(lambda v: [
      make(conv_implementation=impl).apply(v, x, train=True, mutable=["batch_stats"])
      for impl in ("xla", "im2col")])(variables)
  chex.assert_trees_all_close(im2col, xla, rtol=1e-4, atol=1e-4)


def test_dropout_only_in_training():
  # The conv implementation does not matter here; XLA's compiles faster.
  model = models.AllCNNC(act=jax.nn.relu, conv_implementation="xla")
  x = _normal((2, 12, 12, 3))
  variables = _init(model, x)

  @jax.jit
  def outputs(variables):
    train = [model.apply(variables, x, train=True, rngs={"dropout": _dropout_key(s)})
             for s in (2, 3)]
    return model.apply(variables, x, train=False), model.apply(variables, x), train

  eval_out, default_out, (train_a, train_b) = outputs(variables)
  chex.assert_trees_all_equal(eval_out, default_out)
  assert not np.allclose(train_a, eval_out)
  assert not np.allclose(train_a, train_b)


def test_batch_norm_train_and_eval():
  model = models.ResNetCIFAR(act=jax.nn.relu, depth=8, conv_implementation="xla")
  x = 3.0 + 2.0 * _normal((4, 8, 8, 3))
  variables = _init(model, x)

  @jax.jit
  def outputs(variables):
    eval_out = model.apply(variables, x, train=False)  # running averages, nothing mutable
    train_out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    stem = nn.Conv(16, (3, 3), padding=1, use_bias=False).apply(
        {"params": variables["params"]["Conv_0"]}, x)
    return eval_out, train_out, updates, stem

  eval_out, train_out, updates, stem = outputs(variables)
  assert not np.allclose(train_out, eval_out)
  old_mean = variables["batch_stats"]["BatchNorm_0"]["mean"]
  new_mean = updates["batch_stats"]["BatchNorm_0"]["mean"]
  # momentum 0.9: new = 0.9 * old + 0.1 * batch mean.
  chex.assert_trees_all_close(new_mean, 0.9 * old_mean + 0.1 * stem.mean(axis=(0, 1, 2)),
                              rtol=1e-4, atol=1e-5)
