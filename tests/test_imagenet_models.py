"""Tests for the ImageNet-class models: ResNetImageNet (actbench.models) and MobileViTv2
(actbench.models.mobilevit).

Like tests/test_models.py, architecture facts are checked by tracing only (`jax.eval_shape`);
two tests compile a model at 64 px (XLA:CPU compiles dominate the runtime), each once.
"""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from actbench.models import mobilevit
from actbench import models
from actbench.fisher import kfac
from tests import model_helpers
from tests.model_helpers import keys as _keys
from tests.model_helpers import normal as _normal
from tests.model_helpers import numpy_variables as _init
from tests.model_helpers import param_count as _param_count


def _trace(model, shape, train=False):
  """(output, variables, dtypes the activation saw per call), all abstract: nothing compiles."""
  out, variables, seen = model_helpers.trace(model, shape, train)
  return out, variables, [dtype for _, dtype in seen]


# ---------------------------------------------------------------------------------------------
# ResNetImageNet


def _resnet_param_count(stage_sizes, bottleneck, num_classes=1000):
  """Parameters of torchvision's ResNet: convs without bias, norms with scale and offset."""
  total = 7 * 7 * 3 * 64 + 2 * 64
  cin = 64
  for stage, blocks in enumerate(stage_sizes):
    width = 64 * 2**stage
    cout = 4 * width if bottleneck else width
    for block in range(blocks):
      if bottleneck:
        total += cin * width + 9 * width * width + width * cout + 2 * (2 * width + cout)
      else:
        total += 9 * cin * width + 9 * width * width + 4 * width
      if block == 0 and (stage > 0 or cin != cout):  # projection shortcut
        total += cin * cout + 2 * cout
      cin = cout
  return total + cin * num_classes + num_classes


@pytest.mark.parametrize("name,stage_sizes,bottleneck,published", [
    ("resnet18", (2, 2, 2, 2), False, 11_689_512),
    ("resnet50", (3, 4, 6, 3), True, 25_557_032),
    ("resnet101", (3, 4, 23, 3), True, 44_549_160),
])
def test_resnet_parameter_count(name, stage_sizes, bottleneck, published):
  # Published: torchvision's models at 1000 classes.
  assert _resnet_param_count(stage_sizes, bottleneck) == published
  model = models.get_model(name, act=jax.nn.relu, num_classes=1000)
  assert isinstance(model, models.ResNetImageNet)
  assert tuple(model.stage_sizes) == stage_sizes and model.bottleneck == bottleneck
  out, variables, _ = _trace(model, (1, 224, 224, 3))
  assert set(variables) == {"params", "batch_stats"}
  assert _param_count(variables["params"]) == published
  chex.assert_shape(out, (1, 1000))


def test_resnet50_architecture_at_224():
  out, variables, _ = _trace(models.get_model("resnet50", act=jax.nn.relu), (1, 224, 224, 3))
  params = variables["params"]
  assert params["Conv_0"]["kernel"].shape == (7, 7, 3, 64)
  # Stride on the 3x3 conv ("v1.5"), the projection 1x1 with the same stride.
  first_of_stage2 = params["ImageNetBlock_3"]
  assert first_of_stage2["Conv_0"]["kernel"].shape == (1, 1, 256, 128)
  assert first_of_stage2["Conv_1"]["kernel"].shape == (3, 3, 128, 128)
  assert first_of_stage2["Conv_2"]["kernel"].shape == (1, 1, 128, 512)
  assert first_of_stage2["Conv_3"]["kernel"].shape == (1, 1, 256, 512)
  assert "Conv_3" not in params["ImageNetBlock_4"]  # identity shortcut
  assert params["Dense_0"]["kernel"].shape == (2048, 1000)
  # One norm per conv: 53 norms' means and variances, as many as their scales and offsets.
  assert _param_count(variables["batch_stats"]) == 53_120
  assert out.dtype == jnp.float32


def test_resnet_zero_init_last_bn():
  blocks = [models.ImageNetBlock(4, act=jax.nn.relu, strides=2, zero_init_last_bn=zero_init,
                                 conv_implementation="xla") for zero_init in (True, False)]
  x = _normal((1, 8, 8, 8))

  @jax.jit
  def run(x):
    # 'rbg' keys compile far faster than threefry ones on XLA:CPU.
    (out, variables), (_, plain) = [b.init_with_output(jax.random.key(0, impl="rbg"), x)
                                    for b in blocks]
    shortcut = nn.Conv(16, (1, 1), strides=2, padding=0, use_bias=False).apply(
        {"params": variables["params"]["Conv_3"]}, x)
    return out, variables["params"], plain["params"], shortcut

  out, params, plain, shortcut = run(x)
  # BatchNorm_2 ends the residual branch; BatchNorm_3 normalizes the projection shortcut.
  np.testing.assert_array_equal(params["BatchNorm_2"]["scale"], 0.0)
  np.testing.assert_array_equal(plain["BatchNorm_2"]["scale"], 1.0)
  for name in ("BatchNorm_0", "BatchNorm_1", "BatchNorm_3"):
    np.testing.assert_array_equal(params[name]["scale"], 1.0)
  assert out.shape == (1, 4, 4, 16)
  # The block starts as act(its shortcut); with train=False the shortcut's norm uses its
  # initial running averages, mean 0 and variance 1.
  np.testing.assert_allclose(out, jax.nn.relu(shortcut / np.sqrt(1 + 1e-5)), rtol=1e-5,
                             atol=1e-5)
  # Off by default: zero scales make the residual branches' Fisher blocks vanish at init.
  assert not models.ResNetImageNet(act=jax.nn.relu).zero_init_last_bn


# ---------------------------------------------------------------------------------------------
# MobileViTv2

# (stem, layer1, layer2, (attention width, output channels) of layers 3-5) per width multiplier.
_MOBILEVIT_WIDTHS = {
    0.5: (16, 32, 64, ((64, 128), (96, 192), (128, 256))),
    0.75: (24, 48, 96, ((96, 192), (144, 288), (192, 384))),
    1.0: (32, 64, 128, ((128, 256), (192, 384), (256, 512))),
}


def _mobilevit_param_count(width_multiplier, num_classes=1000):
  """MobileViTv2's parameters counted from its layout (convs without bias, norms with scale and
  offset, dense layers with bias)."""
  stem, width1, width2, vit_widths = _MOBILEVIT_WIDTHS[width_multiplier]

  def mv2(cin, cout):
    hidden = 2 * cin  # already a multiple of 8 for these widths
    return cin * hidden + 9 * hidden + hidden * cout + 2 * (2 * hidden + cout)

  def attention_block(d):
    ffn = 2 * d // 16 * 16
    return (2 * 2 * d  # two norms
            + d * (1 + 2 * d) + 1 + 2 * d + d * d + d  # qkv and output projections
            + d * ffn + ffn + ffn * d + d)

  total = 27 * stem + 2 * stem + mv2(stem, width1) + mv2(width1, width2) + mv2(width2, width2)
  cin = width2
  for (d, cout), blocks in zip(vit_widths, (2, 4, 3)):
    total += mv2(cin, cout)
    total += 9 * cout + 2 * cout + cout * d  # local representation
    total += blocks * attention_block(d) + 2 * d  # attention blocks, final norm
    total += d * cout + 2 * cout  # projection
    cin = cout
  return total + cin * num_classes + num_classes


def test_make_divisible():
  md = mobilevit.make_divisible
  assert [md(16, 8), md(20, 8), md(32, 16), md(48, 16), md(144, 8), md(24, 16)] == [
      16, 24, 32, 48, 144, 32]
  assert md(10, 8) == 16  # 8 would lose more than 10%
  assert md(3, 8) == 8 and md(3, 8, min_value=16) == 16


@pytest.mark.parametrize("name,width_multiplier,exact,published,tolerance", [
    ("mobilevit_v2_050", 0.5, 1_370_593, 1.4e6, 0.03),
    ("mobilevit_v2_075", 0.75, 2_866_009, 2.9e6, 0.05),
    ("mobilevit_v2_100", 1.0, 4_901_841, 4.9e6, 0.05),
])
def test_mobilevit_parameter_count(name, width_multiplier, exact, published, tolerance):
  # Published: the paper's table (ImageNet-1k, 256 px; parameters do not depend on the size).
  assert _mobilevit_param_count(width_multiplier) == exact
  assert abs(exact - published) <= tolerance * published
  model = models.get_model(name, act=jax.nn.relu, num_classes=1000)
  assert isinstance(model, mobilevit.MobileViTv2)
  assert model.width_multiplier == width_multiplier
  out, variables, _ = _trace(model, (1, 256, 256, 3))
  assert set(variables) == {"params", "batch_stats"}
  assert _param_count(variables["params"]) == exact
  chex.assert_shape(out, (1, 1000))


def test_mobilevit_registry_width_is_free():
  model = models.get_model("mobilevit_v2", act=jax.nn.relu)
  assert isinstance(model, mobilevit.MobileViTv2) and model.width_multiplier == 0.5
  assert model.num_classes == 1000
  wide = models.get_model("mobilevit_v2", act=jax.nn.relu, width_multiplier=1.0)
  assert wide.width_multiplier == 1.0


def test_mobilevit_attention_block_counts():
  # One attention block per stage instead of (2, 4, 3): 6 fewer blocks, 6 fewer act sites.
  _, full, full_sites = _trace(mobilevit.MobileViTv2(act=jax.nn.relu), (1, 64, 64, 3))
  _, small, small_sites = _trace(mobilevit.MobileViTv2(act=jax.nn.relu, attn_blocks=(1, 1, 1)),
                                 (1, 64, 64, 3))
  assert len(full_sites) - len(small_sites) == 6
  assert _param_count(small["params"]) < _param_count(full["params"])
  with pytest.raises(ValueError, match="attn_blocks needs one count per attention stage"):
    _trace(mobilevit.MobileViTv2(act=jax.nn.relu, attn_blocks=(1, 1)), (1, 64, 64, 3))


def test_mobilevit_sizes_and_odd_last_stage():
  # 224 px leaves a 7x7 last stage: resized to 8x8 for the 2x2 patches, like ml-cvnets.
  for side in (64, 224, 256):
    out, _, _ = _trace(mobilevit.MobileViTv2(act=jax.nn.relu, num_classes=7), (2, side, side, 3))
    chex.assert_shape(out, (2, 7))
  out, _, _ = _trace(mobilevit.MobileViTv2(act=jax.nn.relu, num_classes=7), (2, 64, 128, 3))
  chex.assert_shape(out, (2, 7))


@pytest.mark.parametrize("shape", [(1, 32, 32, 3), (1, 48, 48, 3), (1, 80, 80, 3),
                                   (1, 64, 100, 3)])
def test_mobilevit_rejects_bad_input_size(shape):
  model = mobilevit.MobileViTv2(act=jax.nn.relu)
  size = f"{shape[1]}x{shape[2]}"
  with pytest.raises(ValueError, match=f"divisible by 32 and at least 64 px.*{size}"):
    jax.eval_shape(lambda: model.init(_keys(), jnp.zeros(shape)))


def test_fold_inverts_unfold_and_resize_aligns_corners():
  x = _normal((2, 6, 4, 3))
  patches = mobilevit._unfold(x, (2, 2))
  assert patches.shape == (2, 4, 6, 3)
  # Pixel (0, 1) of every patch, patches in row-major order.
  np.testing.assert_array_equal(patches[:, 1], x[:, 0::2, 1::2].reshape(2, 6, 3))
  np.testing.assert_array_equal(mobilevit._fold(patches, (2, 2), (6, 4)), x)
  np.testing.assert_allclose(mobilevit._align_corners_matrix(3, 4),
                             [[1, 0, 0], [1 / 3, 2 / 3, 0], [0, 2 / 3, 1 / 3], [0, 0, 1]],
                             atol=1e-6)
  y = _normal((1, 3, 3, 2))
  resized = mobilevit._resize_to_multiple(y, (2, 2))
  assert resized.shape == (1, 4, 4, 2)
  np.testing.assert_allclose(resized[:, ::3, ::3], y[:, ::2, ::2], atol=1e-6)  # corners kept
  assert mobilevit._resize_to_multiple(x, (2, 2)) is x


def _linear_attention_reference(params, x):
  """One separable linear self-attention (Mehta & Rastegari 2022, section 3.2) in float64 NumPy,
  written from the paper on (B, P, N, d) patches: a projection to 1 + 2d gives a query score,
  keys and values per patch; the scores' softmax over the N patches weights the keys' sum into
  one context vector (per pixel position P); out = relu(values) * context, broadcast over the
  patches; then the output projection."""
  x = np.asarray(x, np.float64)
  dim = x.shape[-1]
  w_in, b_in, w_out, b_out = [np.asarray(params[layer][name], np.float64)
                              for layer in ("Dense_0", "Dense_1") for name in ("kernel", "bias")]
  assert w_in.shape == (dim, 1 + 2 * dim) and w_out.shape == (dim, dim)
  projected = x @ w_in + b_in
  scores, keys, values = projected[..., 0], projected[..., 1:1 + dim], projected[..., 1 + dim:]
  weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
  weights /= weights.sum(axis=-1, keepdims=True)  # (B, P, N): a distribution over patches
  context = np.einsum("bpn,bpnd->bpd", weights, keys)
  return (np.maximum(values, 0) * context[:, :, None, :]) @ w_out + b_out


def test_linear_self_attention_matches_the_paper():
  x = _normal((2, 4, 6, 8), seed=3)  # B, P pixels per patch, N patches, d: P != N
  variables = _init(mobilevit.LinearSelfAttention(), x, seed=4)
  expected = _linear_attention_reference(variables["params"], x)
  # No attention dropout outside training; with it, a different output in training.
  module = mobilevit.LinearSelfAttention(attn_dropout_rate=0.5)
  # 'rbg' keys compile far faster than threefry ones on XLA:CPU.
  rngs = {"dropout": jax.random.key(5, impl="rbg")}
  evaluate = jax.jit(lambda v, x, train: module.apply(v, x, train=train, rngs=rngs),
                     static_argnums=2)
  out = evaluate(variables, x, False)
  assert out.shape == x.shape and out.dtype == jnp.float32
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  assert not np.allclose(evaluate(variables, x, True), expected, rtol=1e-2, atol=1e-2)
  # bfloat16 computation (the softmax's exponentials in float32): bfloat16's 8 bits.
  low = mobilevit.LinearSelfAttention(dtype=jnp.bfloat16).apply(variables, x)
  assert low.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(low, np.float64), expected, rtol=0.05,
                             atol=0.05 * np.abs(expected).max())


# ---------------------------------------------------------------------------------------------
# Both: activation sites, dtypes, coverage by the Fisher features


@pytest.mark.parametrize("name,sites", [
    ("resnet18", 1 + 8 * 2),
    ("resnet50", 1 + 16 * 3),
    # stem, layer1, layer2, then MV2 + local rep + one per attention block in layers 3-5.
    ("mobilevit_v2", 1 + 2 + 2 * 2 + 3 * (2 + 1) + (2 + 4 + 3)),
])
def test_activation_applied_at_every_site(name, sites):
  model = models.get_model(name, act=jax.nn.relu, num_classes=10)
  for train in (False, True):
    assert len(_trace(model, (2, 64, 64, 3), train=train)[2]) == sites


@pytest.mark.parametrize("name,relus", [("resnet50", 0), ("mobilevit_v2", 2 + 4 + 3)])
def test_only_the_attention_relu_is_not_act(name, relus, monkeypatch):
  """With the identity as `act`, the only relu left is the one on the attention's values."""
  calls = []
  relu = jax.nn.relu

  def counting_relu(x):
    calls.append(x.shape)
    return relu(x)

  monkeypatch.setattr(jax.nn, "relu", counting_relu)
  model = models.get_model(name, act=lambda x: x, num_classes=10)
  jax.eval_shape(lambda: model.init(_keys(), jnp.zeros((2, 64, 64, 3))))
  assert len(calls) == relus
  # values (B, P, N, d) of the attention blocks of layers 3-5 at 64 px: 8x8, 4x4, 2x2 maps.
  if relus:
    assert sorted(set(calls)) == [(2, 4, 1, 128), (2, 4, 4, 96), (2, 4, 16, 64)]


@pytest.mark.parametrize("name", ["resnet50", "mobilevit_v2"])
def test_bfloat16_computation(name):
  model = models.get_model(name, act=jax.nn.relu, num_classes=10, dtype=jnp.bfloat16)
  out, variables, seen = _trace(model, (2, 64, 64, 3), train=True)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  assert set(seen) == {jnp.dtype(jnp.bfloat16)}
  assert out.dtype == jnp.float32 and out.shape == (2, 10)


@pytest.mark.parametrize("name,convs,depthwise,denses,uncovered", [
    ("resnet50", 53, 0, 1, {"BatchNorm": 53}),
    # convs: stem, 3 per MV2 block (6), 3 per MobileViTv2 block; denses: 4 per attention block
    # and the classifier; norms: after each conv but the MobileViTv2 blocks' 1x1 input convs,
    # two per attention block and one per MobileViTv2 block.
    ("mobilevit_v2", 1 + 3 * 6 + 3 * 3, 6 + 3, 4 * 9 + 1, {"BatchNorm": 25, "GroupNorm": 21}),
])
def test_fisher_features_cover_every_conv_and_dense(name, convs, depthwise, denses, uncovered):
  model = models.get_model(name, act=jax.nn.relu, num_classes=10)
  images = jnp.zeros((2, 64, 64, 3))
  variables = jax.eval_shape(lambda: model.init(_keys(), images))
  layers, left_out = kfac.find_layers(model, variables, images)
  kinds = [layer.kind for layer in layers]
  assert kinds.count("conv") + kinds.count("depthwise_conv") == convs
  assert kinds.count("depthwise_conv") == depthwise
  assert kinds.count("dense") == denses and len(kinds) == convs + denses
  modules = [entry.reason.split()[0] for entry in left_out]
  assert {kind: modules.count(kind) for kind in set(modules)} == uncovered
  assert all(entry.reason.endswith("weights are not Dense or Conv kernels") for entry in left_out)
  # Every parameter is either in a covered layer or in a norm.
  norm_params = sum(
      _param_count(leaves) for path, leaves in _flat_modules(variables["params"]).items()
      if path.split("/")[-1].split("_")[0] in ("BatchNorm", "GroupNorm"))
  assert sum(entry.num_weights for entry in left_out) == norm_params
  assert sum(layer.num_weights for layer in layers) + norm_params == _param_count(
      variables["params"])


def _flat_modules(params, prefix=""):
  """module path -> its own parameter dict, for the innermost modules of a parameter tree."""
  out = {}
  for name, value in params.items():
    path = f"{prefix}/{name}" if prefix else name
    if all(not isinstance(v, dict) for v in value.values()):
      out[path] = value
    else:
      out.update(_flat_modules(value, path))
  return out


def _coded_act(code):
  """A population member's activation: data (an integer code), not Python structure."""
  return lambda x: jax.lax.switch(code, [jax.nn.relu, jnp.tanh, jnp.sin], x)


@pytest.mark.parametrize("name", ["resnet50", "mobilevit_v2"])
def test_population_under_lax_map_traces(name):
  """The engine's CPU form: members under `jax.lax.map`, each with its own batch statistics.
  Traced only (no Python-side state may leak between members)."""
  make = functools.partial(models.get_model, name, num_classes=10)
  x = jnp.zeros((2, 64, 64, 3))
  member = jax.eval_shape(lambda: make(act=jax.nn.relu).init(_keys(), x))
  stacked = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct((3,) + leaf.shape, leaf.dtype), member)

  def apply_member(args):
    code, variables = args
    return make(act=_coded_act(code)).apply(variables, x, train=True, mutable=["batch_stats"])

  logits, updates = jax.eval_shape(lambda c, v: jax.lax.map(apply_member, (c, v)),
                                   jax.ShapeDtypeStruct((3,), jnp.int32), stacked)
  assert logits.shape == (3, 2, 10) and logits.dtype == jnp.float32
  chex.assert_trees_all_equal_shapes_and_dtypes(updates["batch_stats"], stacked["batch_stats"])


# ---------------------------------------------------------------------------------------------
# Computation (one compile per model)


@pytest.mark.parametrize("name,fields", [
    # ResNet-50's blocks at one per stage (two in stage 2, for an identity shortcut): every
    # kind of conv ResNet-50 has, at a quarter of its compile time.
    ("resnet50", {"stage_sizes": (1, 2, 1, 1)}),
    ("mobilevit_v2", {}),
])
@pytest.mark.slow
def test_implementations_agree_and_train_updates_batch_stats(name, fields):
  make = functools.partial(models.get_model, name, act=jax.nn.swish, num_classes=10, **fields)
  x = _normal((2, 64, 64, 3))
  variables = _init(make(), x)
  xla, im2col = jax.jit(lambda v: [
      make(conv_implementation=impl).apply(v, x, train=True, mutable=["batch_stats"])
      for impl in ("xla", "im2col")])(variables)
  chex.assert_trees_all_close(im2col, xla, rtol=1e-4, atol=1e-4)
  logits, updates = xla
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits)) and not np.allclose(logits[0], logits[1])
  old = jax.tree.leaves(variables["batch_stats"])
  new = jax.tree.leaves(updates["batch_stats"])
  assert len(new) == len(old)
  assert all(not np.allclose(a, b) for a, b in zip(old, new))
