"""Fisher features: K-FAC factors against brute force on tiny layers, spectra, CDFs, populations.

XLA:CPU compiles dominate the runtime, so every model is small and each jitted program is built
once per module (fixtures with module scope).
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import actbench
from actbench import fisher, models
from actbench.engine import population
from actbench.models import layers
from actbench.fisher import device_eigenvalues, moments, spectrum

NUM_CLASSES = 3


class Zoo(nn.Module):
  """One layer of every covered kind (13x13x3 inputs), each followed by the activation."""

  act: callable = jnp.tanh

  @nn.compact
  def __call__(self, x, train=False):
    del train
    # name: (module, kind)
    x = self.act(nn.Conv(4, (3, 3), padding="SAME", name="same_s1_bias")(x))  # 13x13x4
    x = self.act(layers.Conv(6, (3, 3), strides=2, padding="VALID", use_bias=False,
                             implementation="im2col", name="valid_s2")(x))  # 6x6x6
    x = self.act(layers.Conv(6, (3, 3), padding="SAME", feature_group_count=6,
                             implementation="im2col", name="depthwise")(x))  # 6x6x6
    x = self.act(nn.Conv(4, (3, 2), padding="VALID", kernel_dilation=(1, 2),
                         feature_group_count=2, name="grouped_dilated")(x))  # 4x4x4
    x = self.act(nn.Conv(8, (3, 3), strides=2, padding=((1, 0), (2, 1)), feature_group_count=4,
                         use_bias=False, name="depthwise_x2_explicit")(x))  # 2x3x8
    x = self.act(layers.Conv(5, (3, 3), strides=2, padding="SAME", implementation="im2col",
                             name="same_s2_bias")(x))  # 1x2x5
    x = x.reshape(x.shape[0], -1)
    x = self.act(nn.Dense(6, name="dense_bias")(x))
    return nn.Dense(NUM_CLASSES, use_bias=False, name="dense")(x)


# (name, stride, padding as given, kernel dilation, groups) of the Zoo's convolutions.
ZOO_CONVS = [
    ("same_s1_bias", (1, 1), "SAME", (1, 1), 1),
    ("valid_s2", (2, 2), "VALID", (1, 1), 1),
    ("depthwise", (1, 1), "SAME", (1, 1), 6),
    ("grouped_dilated", (1, 1), "VALID", (1, 2), 2),
    ("depthwise_x2_explicit", (2, 2), ((1, 0), (2, 1)), (1, 1), 4),
    ("same_s2_bias", (2, 2), "SAME", (1, 1), 1),
]
ZOO_DENSE = ["dense_bias", "dense"]


def _same_pads(size, kernel, stride, dilation):
  dilated = (kernel - 1) * dilation + 1
  out = -(-size // stride)
  total = max((out - 1) * stride + dilated - size, 0)
  return total // 2, total - total // 2


def _explicit_pads(padding, spatial, kernel, stride, dilation):
  if padding == "VALID":
    return [(0, 0)] * len(spatial)
  if padding == "SAME":
    return [_same_pads(n, k, s, d) for n, k, s, d in zip(spatial, kernel, stride, dilation)]
  return [tuple(p) for p in padding]


def _brute_forward(params, x, perturbations=None):
  """The Zoo by hand (XLA convolutions, own padding).

  Returns (logits, the input of every layer, the output (pre-activation) of every layer)."""
  inputs, outputs = [], []

  def output(y, p, i):
    if "bias" in p:
      y = y + p["bias"]
    if perturbations is not None:
      y = y + perturbations[i]
    outputs.append(y)
    return y

  for i, (name, stride, padding, dilation, groups) in enumerate(ZOO_CONVS):
    p = params[name]
    inputs.append(x)
    pads = _explicit_pads(padding, x.shape[1:3], p["kernel"].shape[:2], stride, dilation)
    y = jax.lax.conv_general_dilated(x, p["kernel"], stride, pads, rhs_dilation=dilation,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     feature_group_count=groups,
                                     precision=jax.lax.Precision.HIGHEST)
    x = jnp.tanh(output(y, p, i))
  x = x.reshape(x.shape[0], -1)
  for i, name in enumerate(ZOO_DENSE):
    p = params[name]
    inputs.append(x)
    y = output(jnp.dot(x, p["kernel"], precision=jax.lax.Precision.HIGHEST), p,
               len(ZOO_CONVS) + i)
    x = jnp.tanh(y) if i == 0 else y
  return x, inputs, outputs


def _brute_factors(params, images, labels):
  """{name: (A, G)} by explicit loops over examples and output locations (NumPy, float64).

  Per-example output gradients: jax.grad of one example's cross-entropy with respect to zero
  perturbations of every layer's output, one example at a time."""
  _, inputs, outputs = _brute_forward(params, images)

  @jax.jit
  def example_grads(x, label):
    def loss(perturbations):
      logits, _, _ = _brute_forward(params, x[None], perturbations)
      return -jax.nn.log_softmax(logits[0])[label]
    return jax.grad(loss)([jnp.zeros((1,) + o.shape[1:]) for o in outputs])

  batch = images.shape[0]
  per_example = [example_grads(images[b], labels[b]) for b in range(batch)]
  result = {}
  for i, (name, stride, padding, dilation, groups) in enumerate(ZOO_CONVS):
    kernel = np.asarray(params[name]["kernel"])
    kh, kw, per_group, features = kernel.shape
    has_bias = "bias" in params[name]
    x = np.asarray(inputs[i], np.float64)
    pads = _explicit_pads(padding, x.shape[1:3], (kh, kw), stride, dilation)
    xp = np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)])
    out_per_group = features // groups
    g_all = [np.asarray(per_example[b][i][0], np.float64) for b in range(batch)]
    out_h, out_w = g_all[0].shape[:2]
    dim = kh * kw * per_group + has_bias
    a = np.zeros((groups, dim, dim))
    g = np.zeros((groups, out_per_group, out_per_group))
    for b in range(batch):
      for oh in range(out_h):
        for ow in range(out_w):
          rows = [oh * stride[0] + t * dilation[0] for t in range(kh)]
          cols = [ow * stride[1] + t * dilation[1] for t in range(kw)]
          patch = xp[b][np.ix_(rows, cols)]  # (kh, kw, C)
          for grp in range(groups):
            vec = patch[:, :, grp * per_group:(grp + 1) * per_group].ravel()
            if has_bias:
              vec = np.append(vec, 1.0)
            a[grp] += np.outer(vec, vec)
            gv = g_all[b][oh, ow, grp * out_per_group:(grp + 1) * out_per_group]
            g[grp] += np.outer(gv, gv)
    result[name] = (a / batch, g / (batch * out_h * out_w))
  for i, name in enumerate(ZOO_DENSE):
    k = len(ZOO_CONVS) + i
    x = np.asarray(inputs[k], np.float64)
    if "bias" in params[name]:
      x = np.concatenate([x, np.ones((batch, 1))], axis=1)
    a = sum(np.outer(v, v) for v in x) / batch
    grads = [np.asarray(per_example[b][k][0], np.float64) for b in range(batch)]
    g = sum(np.outer(v, v) for v in grads) / batch
    result[name] = (a[None], g[None])
  return result


def _normal(shape, seed):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def zoo():
  """(model, variables, images, labels, factors by path, brute force by path)."""
  model = Zoo()
  images = _normal((4, 13, 13, 3), 0)
  labels = np.array([0, 2, 1, 2])
  # Parameters from NumPy (a JAX initializer compiles for seconds): He-normal kernels and
  # non-zero biases, so the bias rows of A see more than the constant 1.
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), images[:1]))["params"]
  rng = np.random.default_rng(1)
  params = {name: {k: (rng.standard_normal(v.shape) * (np.sqrt(2 / np.prod(v.shape[:-1]))
                                                       if k == "kernel" else 0.3)
                       ).astype(np.float32) for k, v in p.items()} for name, p in shapes.items()}
  variables = {"params": params}
  factors = fisher.kfac_factors(model, variables, images, labels, batch_chunk=2)
  brute = _brute_factors(params, images, labels)
  return model, variables, images, labels, {f.path: f for f in factors}, brute


def test_layers_are_derived_from_the_model(zoo):
  model, variables, images, _, factors, _ = zoo
  found, uncovered = fisher.find_layers(model, variables, images)
  assert [layer.path for layer in found] == [c[0] for c in ZOO_CONVS] + ZOO_DENSE
  assert list(factors) == [layer.path for layer in found]
  assert not uncovered
  kinds = {layer.path: layer.kind for layer in found}
  assert kinds == {"same_s1_bias": "conv", "valid_s2": "conv", "depthwise": "depthwise_conv",
                   "grouped_dilated": "grouped_conv", "depthwise_x2_explicit": "depthwise_conv",
                   "same_s2_bias": "conv", "dense_bias": "dense", "dense": "dense"}
  for layer in found:
    params = variables["params"][layer.path]
    assert layer.num_weights == sum(v.size for v in params.values())
    assert layer.has_bias == ("bias" in params)
    assert layer.num_blocks * layer.a_dim * layer.g_dim == layer.num_weights


@pytest.mark.parametrize("name", [c[0] for c in ZOO_CONVS] + ZOO_DENSE)
def test_factors_equal_brute_force(zoo, name):
  *_, factors, brute = zoo
  a, g = brute[name]
  assert factors[name].A.shape == a.shape and factors[name].G.shape == g.shape
  np.testing.assert_allclose(factors[name].A, a, rtol=2e-5, atol=2e-6 * np.abs(a).max())
  np.testing.assert_allclose(factors[name].G, g, rtol=2e-4, atol=2e-6 * np.abs(g).max())


@pytest.mark.parametrize("name", ["same_s1_bias", "depthwise", "grouped_dilated", "dense_bias"])
def test_log_spectrum_is_the_kronecker_spectrum(zoo, name):
  *_, factors, _ = zoo
  f = factors[name]
  log_eigs, dropped = fisher.log_eigenvalues([f])
  kron = np.concatenate([np.linalg.eigvalsh(np.kron(a, g)) for a, g in zip(f.A, f.G)])
  assert log_eigs[0].size + dropped[0] == kron.size == f.num_weights
  ours = np.sort(np.exp(log_eigs[0]))
  # Exactly zero eigenvalues come out as rounding noise of either sign in both computations:
  # compare the spectrum above a relative threshold.
  cutoff = 1e-9 * kron.max()
  np.testing.assert_allclose(ours[ours > cutoff], np.sort(kron[kron > cutoff]), rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("num_shifted", [0, 1, 2])
def test_conv_moment_plans_agree(num_shifted):
  """Every choice of shifted dims gives the same A as gathering patches (explicit loops)."""
  rng = np.random.default_rng(3)
  cases = [  # kernel, strides, dilation, pads, pre_pad, groups, spatial, channels
      ((3, 3), (1, 1), (1, 1), ((1, 1), (1, 1)), None, 1, (6, 5), 2),
      ((3, 3), (2, 2), (1, 1), ((0, 1), (1, 1)), None, 1, (7, 6), 2),
      ((3, 2), (2, 1), (2, 1), ((2, 0), (0, 3)), None, 2, (8, 5), 4),
      ((2, 3), (1, 3), (1, 2), ((-1, 2), (1, 0)), None, 3, (5, 9), 3),
      ((3, 2), (1, 1), (1, 1), ((0, 0), (0, 0)), ("wrap", ((1, 1), (0, 1))), 1, (4, 4), 2),
  ]
  geometries, inputs = [], []
  for kernel, strides, dilation, pads, pre_pad, groups, spatial, channels in cases:
    geometries.append(moments.ConvGeometry(kernel, strides, dilation, pads, pre_pad, groups,
                                           spatial))
    inputs.append(rng.standard_normal((2,) + spatial + (channels,)).astype(np.float32))
  got = jax.jit(lambda xs: [moments.conv_input_moment(x, geo, True, num_shifted)
                            for x, geo in zip(xs, geometries)])(inputs)
  # The population programs' way: the parts on the device, assembled on the host in float64.
  parts = jax.jit(lambda xs: [moments.conv_input_parts(x, geo, True, num_shifted)
                              for x, geo in zip(xs, geometries)])(inputs)
  for x, geo, p in zip(inputs, geometries, parts):
    count = x.shape[0] * math.prod(geo.out_spatial)
    got.append(moments.assemble_conv_moment(p, geo, x.shape[-1], True, num_shifted, count, np))
  for x, geo, a in zip(inputs + inputs, geometries + geometries, got):
    x = np.asarray(x, np.float64)
    if geo.pre_pad is not None:
      x = np.pad(x, [(0, 0), *geo.pre_pad[1], (0, 0)], mode=geo.pre_pad[0])
    (plo, phi), (qlo, qhi) = geo.pads
    # lax.pad semantics (negative = crop), by hand.
    x = np.pad(x, [(0, 0), (max(plo, 0), max(phi, 0)), (max(qlo, 0), max(qhi, 0)), (0, 0)])
    x = x[:, max(-plo, 0):x.shape[1] - max(-phi, 0), max(-qlo, 0):x.shape[2] - max(-qhi, 0)]
    kh, kw = geo.kernel_size
    per_group = x.shape[-1] // geo.groups
    dim = kh * kw * per_group + 1
    expected = np.zeros((geo.groups, dim, dim))
    out_h, out_w = geo.out_spatial
    for b in range(x.shape[0]):
      for oh in range(out_h):
        for ow in range(out_w):
          rows = [oh * geo.strides[0] + t * geo.kernel_dilation[0] for t in range(kh)]
          cols = [ow * geo.strides[1] + t * geo.kernel_dilation[1] for t in range(kw)]
          patch = x[b][np.ix_(rows, cols)]
          for grp in range(geo.groups):
            vec = np.append(patch[..., grp * per_group:(grp + 1) * per_group].ravel(), 1.0)
            expected[grp] += np.outer(vec, vec)
    np.testing.assert_allclose(np.asarray(a), expected, rtol=1e-5, atol=1e-4)


def test_plan_choice():
  """im2col for small layers; shifted taps where they save real work (All-CNN-C sizes)."""
  def geometry(size, stride):
    return moments.ConvGeometry((3, 3), (stride, stride), (1, 1), ((1, 1), (1, 1)), None, 1,
                                (size, size))
  assert moments.choose_num_shifted(geometry(8, 1), 4, 16) == 0
  assert moments.choose_num_shifted(geometry(32, 1), 96, 32) == 2
  assert moments.choose_num_shifted(geometry(32, 2), 96, 32) == 1
  plan = moments.shift_plan(geometry(32, 1), 2)
  # 13 tap offsets (d and -d share a product: A is symmetric) plus border strips.
  assert len({(c[0][1] - c[0][0], c[1][1] - c[1][0]) for c in plan.cells}) == 13
  assert len(plan.pair_cells) == 45


def test_eigenvalues_many_keeps_the_order():
  """In a thread pool, largest first: the results still come back in the given order."""
  rng = np.random.default_rng(7)
  stacks = []
  for blocks, dim in [(1, 3), (2, 40), (1, 130), (3, 5), (1, 70)]:
    x = rng.standard_normal((blocks, 2 * dim, dim))
    stacks.append(np.einsum("bnd,bne->bde", x, x))
  got = spectrum.eigenvalues_many(stacks)
  assert len(got) == len(stacks)
  for stack, values in zip(stacks, got):
    np.testing.assert_array_equal(values, np.linalg.eigvalsh(stack))


def test_log_eigenvalues_drop_non_positive_products():
  a = np.diag([2.0, 0.0, -1e-3])[None]
  g = np.diag([3.0, 0.5])[None]
  f = fisher.LayerFactors("layer", "dense", a, g, 6, False)
  (values,), dropped = fisher.log_eigenvalues([f])
  np.testing.assert_allclose(np.sort(values), np.sort([np.log(6.0), np.log(1.0)]))
  assert dropped.tolist() == [4]
  with pytest.raises(ValueError, match="layer: G is not finite"):
    fisher.log_eigenvalues([fisher.LayerFactors("layer", "dense", a, g * np.nan, 6, False)])


def test_eigenvalue_floor_drops_roundoff_relative_to_each_factor():
  # Two blocks, so that the floor is relative to each block's own largest eigenvalue.
  a = np.array([[4.0, 1e-9, 2e-3], [1e-3, 1e-7, 0.5]])
  g = np.array([[1.0, 1e-8], [2.0, 3e-6]])
  floor = 1e-5
  values, dropped = spectrum.block_log_eigenvalues(a, g, floor)
  expected, lost = [], 0
  for a_block, g_block in zip(a, g):  # brute force: every pair, kept when both factors are
    for x in a_block:
      for y in g_block:
        if x >= floor * a_block.max() and y >= floor * g_block.max():
          expected.append(np.log(x) + np.log(y))
        else:
          lost += 1
  np.testing.assert_allclose(values, expected)
  assert dropped == lost == 8
  # No floor: every positive eigenvalue stays.
  assert spectrum.block_log_eigenvalues(a, g)[1] == 0
  # Clamped: every eigenvalue stays, those below the floor (or not positive) raised to it.
  clamped, none_dropped = spectrum.block_log_eigenvalues(
      a, np.array([[1.0, -1e-8], [2.0, 3e-6]]), floor, "clamp")
  expected = []
  for a_block, g_block in zip(a, [[1.0, -1e-8], [2.0, 3e-6]]):
    for x in a_block:
      for y in g_block:
        expected.append(np.log(max(x, floor * max(a_block))) + np.log(max(y, floor * max(g_block))))
  np.testing.assert_allclose(clamped, expected)
  assert none_dropped == 0 and clamped.size == a.size * 2
  with pytest.raises(ValueError, match="mode"):
    spectrum.block_log_eigenvalues(a, g, floor, "round")
  f = fisher.LayerFactors("layer", "dense", np.diag([2.0, 1e-12])[None], np.diag([3.0])[None],
                          2, False)
  assert fisher.log_eigenvalues([f])[1].tolist() == [0]
  assert fisher.log_eigenvalues([f], eigenvalue_floor=1e-6)[1].tolist() == [1]


def test_cdf_features_by_hand():
  # 500 weights: edges -100, -50, 0, 50, 100 (4 bins); 200 is out of range and not counted.
  first = np.array([-60.0, -10.0, -5.0, 10.0, 200.0])
  # 150 weights: fewer than 200, one bin.
  second = np.array([3.0, -300.0])
  features = fisher.cdf_features([first, second], [500, 150])
  assert features.dtype == np.float32
  np.testing.assert_allclose(features, [0.25, 0.75, 1.0, 1.0, 1.0])
  # 1000 weights: 10 edges; the last bin is closed at 100.
  np.testing.assert_allclose(fisher.cdf_features([np.array([100.0, -100.0])], [1000]),
                             [0.5] + [0.5] * 7 + [1.0])
  empty = fisher.cdf_features([np.array([150.0])], [500])
  assert np.isnan(empty).all() and empty.shape == (4,)


def test_uncovered_weights_are_listed():
  model = models.ResNetCIFAR(act=jax.nn.relu, depth=8)
  images = np.zeros((2, 8, 8, 3), np.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images[:1]))
  found, uncovered = fisher.find_layers(model, variables, images)
  assert [layer.kind for layer in found] == ["conv"] * 7 + ["dense"]
  assert all(u.path.split("/")[-1].startswith("BatchNorm") for u in uncovered)
  assert len(uncovered) == 7 and all("BatchNorm" in u.reason for u in uncovered)
  total = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(variables["params"]))
  assert sum(layer.num_weights for layer in found) + sum(u.num_weights for u in uncovered) == total
  assert found[0].num_weights == 3 * 3 * 3 * 16 and not found[0].has_bias


def test_published_shift_scales(zoo):
  model, variables, images, labels, factors, _ = zoo
  shifted = fisher.kfac_factors(model, variables, images, labels, batch_chunk=2,
                                published_shift=True)
  batch = images.shape[0]
  for f in shifted:
    base = factors[f.path]
    if f.kind == "dense":
      width = variables["params"][f.path]["kernel"].shape[0] + 1
      np.testing.assert_allclose(f.A, base.A * batch / width)
      np.testing.assert_allclose(f.G, base.G / (batch * width))
    else:
      np.testing.assert_allclose(f.A, base.A)
      np.testing.assert_allclose(f.G, base.G / batch**2)


def test_sampled_fisher_is_deterministic_and_differs(zoo):
  model, variables, images, labels, factors, _ = zoo
  run = functools.partial(fisher.kfac_factors, model, variables, images, labels, batch_chunk=2,
                          fisher_type="sampled")
  first, again, other = run(key=0), run(key=0), run(key=1)
  for f, g in zip(first, again):
    np.testing.assert_array_equal(f.G, g.G)
    np.testing.assert_allclose(f.A, factors[f.path].A, rtol=1e-6, atol=1e-7)
  assert not np.allclose(first[-1].G, factors["dense"].G)
  assert not np.allclose(first[-1].G, other[-1].G)
  with pytest.raises(ValueError, match="needs a key"):
    fisher.kfac_factors(model, variables, images, labels, fisher_type="sampled")


# ---------------------------------------------------------------------------------------------
# populations


def small_cnn(act):
  return models.SmallCNN(act=act, features=(4, 4), hidden=16, conv_implementation="im2col")


TABLE = population.FunctionTable.of(["relu(x)", "tanh(x)", "swish(x)", "reciprocal(zero(x))"])


@pytest.fixture(scope="module")
def digits_batch():
  # More examples than any layer has inputs: A is full rank, so no eigenvalue is rounding
  # noise (whose logarithm two different programs would not reproduce).
  images = _normal((64, 6, 6, 1), 4)
  labels = np.arange(64) % 10
  return images, labels


@pytest.fixture(scope="module")
def population_result(digits_batch):
  images, labels = digits_batch
  codes = TABLE.encode(["relu(x)", "tanh(x)", "swish(x)"])
  return fisher.population_features(small_cnn, TABLE, codes, images, labels, batch_chunk=16,
                                    members_per_call=4)


@pytest.mark.slow
def test_population_equals_one_at_a_time(digits_batch, population_result):
  images, labels = digits_batch
  result = population_result
  assert result.names == ["relu(x)", "tanh(x)", "swish(x)"]
  assert not result.failed and not result.uncovered
  assert [layer.path for layer in result.layers] == ["Conv_0", "Conv_1", "Dense_0", "Dense_1"]
  variables = fisher.init_variables(small_cnn, images.shape[1:], seed=0)
  for i, name in enumerate(result.names):
    factors = fisher.kfac_factors(small_cnn(actbench.compile(name)), variables, images, labels)
    log_eigs, dropped = fisher.log_eigenvalues(factors)
    single = fisher.cdf_features(log_eigs, [f.num_weights for f in factors])
    assert result.features.shape == (3, single.size)
    np.testing.assert_allclose(result.features[i], single, atol=1e-6)
    # The logits layer's G is singular (an example's softmax gradient sums to zero); its zero
    # eigenvalue is rounding noise of either sign, dropped or not depending on the program.
    np.testing.assert_array_equal(result.dropped[i][:-1], dropped[:-1])
  assert not np.allclose(result.features[0], result.features[1])


def test_eigenvalue_floor_removes_the_roundoff_of_the_softmax_factor(digits_batch):
  # The logits layer's G has a zero eigenvalue (softmax gradients sum to zero) that roundoff
  # makes tiny of either sign; a relative floor drops it, whatever its sign.
  images, labels = digits_batch
  codes = TABLE.encode(["relu(x)", "tanh(x)"])
  floored = fisher.population_features(small_cnn, TABLE, codes, images, labels,
                                       batch_chunk=16, eigenvalue_floor=1e-6)
  variables = fisher.init_variables(small_cnn, images.shape[1:], seed=0)
  for i, name in enumerate(floored.names):
    factors = fisher.kfac_factors(small_cnn(actbench.compile(name)), variables, images, labels)
    g = np.linalg.eigvalsh(factors[-1].G.astype(np.float64))
    kept = np.sum(g >= 1e-6 * g.max(axis=-1, keepdims=True))
    a_size = factors[-1].A.shape[-1]
    assert floored.dropped[i][-1] == a_size * (g.size - kept) >= a_size  # at least the zero
    log_eigs, _ = fisher.log_eigenvalues(factors, eigenvalue_floor=1e-6)
    np.testing.assert_allclose(floored.features[i], fisher.cdf_features(
        log_eigs, [f.num_weights for f in factors]), atol=1e-6)


def test_diverging_member_is_missing_and_isolated(digits_batch, population_result):
  images, labels = digits_batch
  codes = TABLE.encode(["relu(x)", "reciprocal(zero(x))", "swish(x)"])
  result = fisher.population_features(small_cnn, TABLE, codes, images, labels, batch_chunk=16,
                                      members_per_call=4)
  assert list(result.failed) == [1] and "not finite" in result.failed[1]
  assert np.isnan(result.features[1]).all()
  np.testing.assert_array_equal(result.features[[0, 2]], population_result.features[[0, 2]])
  np.testing.assert_array_equal(result.dropped[[0, 2]], population_result.dropped[[0, 2]])


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["vmap", "grouped"])
def test_vmap_and_grouped_strategies_equal_map(digits_batch, population_result, strategy):
  images, labels = digits_batch
  codes = TABLE.encode(["relu(x)", "reciprocal(zero(x))", "swish(x)"])
  result = fisher.population_features(small_cnn, TABLE, codes, images, labels, batch_chunk=16,
                                      members_per_call=4, strategy=strategy, group_size=2)
  assert list(result.failed) == [1]
  np.testing.assert_allclose(result.features[[0, 2]], population_result.features[[0, 2]],
                             atol=1e-6)


# ---------------------------------------------------------------------------------------------
# eigenvalues on the device


def _stacks(seed, dims, scale=1.0):
  rng = np.random.default_rng(seed)
  out = []
  for d in dims:
    x = rng.standard_normal((2, 3 * d, d)) * scale
    out.append(np.einsum("bni,bnj->bij", x, x).astype(np.float32))  # positive definite
  return out


@pytest.mark.parametrize("mode", ["device", "device_float32"])
def test_eigenvalue_program_matches_float64_numpy_and_isolates_nan(mode):
  members = [_stacks(seed, (5, 3)) for seed in range(3)]
  members[1][0][1, 2, 2] = np.nan  # member 1's first stack, second block
  stacked = [np.stack([m[k] for m in members]) for k in range(2)]

  def member_matrices(first, second, dtype):
    return [first.astype(dtype) * 2.0, second.astype(dtype)]

  program = device_eigenvalues.eigenvalue_program(member_matrices, mode, ("test", mode))
  eigs, finite = jax.device_get(program(*stacked))
  np.testing.assert_array_equal(finite, [[True, True], [False, True], [True, True]])
  assert eigs[0].dtype == (np.float64 if mode == "device" else np.float32)
  tolerance = 1e-12 if mode == "device" else 1e-5
  for m, matrices in enumerate(members):
    for k, (matrix, scale) in enumerate(zip(matrices, (2.0, 1.0))):
      if not finite[m, k]:
        np.testing.assert_array_equal(eigs[k][m], 0.0)  # decomposed as zeros, no NaN
        continue
      expected = np.linalg.eigvalsh(matrix.astype(np.float64) * scale)
      np.testing.assert_allclose(eigs[k][m], expected, atol=tolerance * expected.max(),
                                 rtol=0)


def test_device_eigenvalues_give_the_host_features(digits_batch, population_result):
  images, labels = digits_batch
  codes = TABLE.encode(["relu(x)", "reciprocal(zero(x))", "swish(x)"])
  host = fisher.population_features(small_cnn, TABLE, codes, images, labels, batch_chunk=16,
                                    members_per_call=4)
  device = fisher.population_features(small_cnn, TABLE, codes, images, labels, batch_chunk=16,
                                      members_per_call=4, eigenvalues="device")
  assert device.failed == host.failed and list(device.failed) == [1]
  np.testing.assert_allclose(device.features[[0, 2]], population_result.features[[0, 2]],
                             atol=1e-6)
  # The softmax G's zero eigenvalue is roundoff of either sign (see above).
  np.testing.assert_array_equal(device.dropped[[0, 2], :-1], host.dropped[[0, 2], :-1])
  with pytest.raises(ValueError, match="eigenvalues must be one of"):
    fisher.population_features(small_cnn, TABLE, codes, images, labels, eigenvalues="gpu")
