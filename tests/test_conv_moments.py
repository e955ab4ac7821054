"""Convolution A factors from shifted moments (issue 27) against float64 NumPy brute force.

`actbench/fisher/moments.py` builds a convolution's A from cells of tap pairs along the first
`num_shifted` spatial dimensions (0: plain im2col). `test_fisher.py` checks hand-built
geometries; here every geometry comes from the capture's own translation of a real
`flax.linen.Conv` or `actbench.models.layers.Conv` (`capture.trace_calls`), and the reference is
independent of it: the layer's patches gathered in NumPy from its input padded as Flax pads,
themselves checked by reproducing the layer's own output. Then whole models: the K-FAC factors
and features with the shifted plans the chooser picks equal those of the patch path.
"""

import dataclasses
import math
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from actbench import fisher, models
from actbench.fisher import capture, moments, spectrum
from actbench.models import layers

# Unit roundoff of float32: the parts are float32 sums.
U32 = 2.0**-24


# ---------------------------------------------------------------------------------------------
# The grid of single layers


@dataclasses.dataclass(frozen=True)
class Case:
  """One convolution layer on one input."""

  module: str  # 'nn.Conv', 'layers.Conv/im2col' or 'layers.Conv/xla'
  kernel: tuple[int, ...]
  strides: tuple[int, ...]
  dilation: tuple[int, ...]
  padding: object  # as given to the module
  groups: int
  channels: int
  features: int
  bias: bool
  spatial: tuple[int, ...]
  batch_shape: tuple[int, ...]

  @property
  def rank(self):
    return len(self.kernel)

  def build(self):
    kwargs = dict(features=self.features, kernel_size=self.kernel, strides=self.strides,
                  padding=self.padding, kernel_dilation=self.dilation,
                  feature_group_count=self.groups, use_bias=self.bias)
    if self.module == "nn.Conv":
      return nn.Conv(**kwargs)
    return layers.Conv(implementation=self.module.split("/")[1], **kwargs)

  def __str__(self):
    groups = "dw" if self.groups == self.channels > 1 else f"g{self.groups}"
    return (f"{self.module}-k{self.kernel}-s{self.strides}-d{self.dilation}-p{self.padding}-"
            f"{groups}-c{self.channels}f{self.features}-{'bias' if self.bias else 'nobias'}-"
            f"x{self.batch_shape}{self.spatial}").replace(" ", "")


# Every padding form the capture translates, per rank. CAUSAL is 1-D only (in Flax too).
PADDINGS = {
    1: ["SAME", "VALID", "SAME_LOWER", ((2, 0),), ((-1, 2),), 2, "CIRCULAR", "REFLECT", "CAUSAL"],
    2: ["SAME", "VALID", "SAME_LOWER", ((1, 1), (2, 2)), ((0, 2), (1, 0)), ((-1, 2), (2, -1)),
        (1, 2), 1, "CIRCULAR", "REFLECT"],
    3: ["SAME", "CIRCULAR"],
}
KERNELS = {1: [(1,), (2,), (3,), (5,)], 2: [(1, 1), (2, 3), (3, 3), (5, 5)],
           3: [(1, 2, 3), (3, 2, 2)]}
MODULES = ["nn.Conv", "layers.Conv/im2col", "layers.Conv/xla"]


def _pads(padding, spatial, kernel, strides, dilation):
  """Per dimension: ('zero' | 'wrap' | 'reflect', (low, high)) as Flax pads, read from its
  documentation and lax's, not from the capture (negative zero pads crop)."""
  rank = len(kernel)
  dilated = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
  if padding in ("CIRCULAR", "REFLECT"):
    mode = "wrap" if padding == "CIRCULAR" else "reflect"
    return [(mode, ((k - 1) // 2, k // 2)) for k in dilated]
  if padding == "CAUSAL":
    return [("zero", (k - 1, 0)) for k in dilated]
  if padding == "VALID":
    return [("zero", (0, 0))] * rank
  if padding in ("SAME", "SAME_LOWER"):
    pads = []
    for n, k, s in zip(spatial, dilated, strides):
      total = max((-(-n // s) - 1) * s + k - n, 0)
      low = total // 2 if padding == "SAME" else total - total // 2
      pads.append(("zero", (low, total - low)))
    return pads
  if isinstance(padding, int):
    return [("zero", (padding, padding))] * rank
  return [("zero", (p, p) if isinstance(p, int) else tuple(p)) for p in padding]


def _padded(x, pads):
  """x (N, *spatial, C) padded per `_pads`, one dimension at a time."""
  for axis, (mode, (low, high)) in enumerate(pads, start=1):
    if mode != "zero":
      x = np.pad(x, [(0, 0)] * axis + [(low, high)] + [(0, 0)] * (x.ndim - axis - 1), mode=mode)
      continue
    x = np.pad(x, [(0, 0)] * axis + [(max(low, 0), max(high, 0))] +
               [(0, 0)] * (x.ndim - axis - 1))
    index = [slice(None)] * x.ndim
    index[axis] = slice(max(-low, 0), x.shape[axis] - max(-high, 0))
    x = x[tuple(index)]
  return x


def _out_spatial(case):
  pads = _pads(case.padding, case.spatial, case.kernel, case.strides, case.dilation)
  return tuple((n + lo + hi - (k - 1) * d - 1) // s + 1 for n, (_, (lo, hi)), k, d, s in
               zip(case.spatial, pads, case.kernel, case.dilation, case.strides))


def brute_patches(case, x):
  """The patch vectors of every output location, float64: (rows, groups, taps * C/groups),
  taps row-major then channels, rows (example, *output location) row-major."""
  x = np.asarray(x, np.float64).reshape((-1,) + case.spatial + (case.channels,))
  x = _padded(x, _pads(case.padding, case.spatial, case.kernel, case.strides, case.dilation))
  out = _out_spatial(case)
  rank = case.rank
  # Index arrays broadcast to (*out, *kernel): position o*s + t*d along each dimension.
  index = []
  for i in range(rank):
    shape = [1] * (2 * rank)
    shape[i], shape[rank + i] = out[i], case.kernel[i]
    positions = (np.arange(out[i])[:, None] * case.strides[i] +
                 np.arange(case.kernel[i])[None, :] * case.dilation[i])
    index.append(positions.reshape(shape))
  patches = x[(slice(None),) + tuple(index)]  # (N, *out, *kernel, C)
  taps = math.prod(case.kernel)
  per_group = case.channels // case.groups
  patches = patches.reshape(-1, taps, case.groups, per_group)
  return patches.transpose(0, 2, 1, 3).reshape(-1, case.groups, taps * per_group)


def brute_moment(case, patches):
  """A summed over rows, per group: (groups, D, D) float64, a trailing 1 with a bias."""
  if case.bias:
    patches = np.concatenate([patches, np.ones(patches.shape[:2] + (1,))], axis=-1)
  return np.einsum("rgi,rgj->gij", patches, patches)


def _cells(case):
  """How many products the case's fully shifted plan has: its compile time grows with them
  (about 15 ms each on XLA:CPU), so the draw keeps it bounded."""
  pads = _pads(case.padding, case.spatial, case.kernel, case.strides, case.dilation)
  pre_pad = None
  if pads[0][0] != "zero":
    pre_pad, pads = (pads[0][0], tuple(p for _, p in pads)), [("zero", (0, 0))] * case.rank
  geometry = moments.ConvGeometry(case.kernel, case.strides, case.dilation,
                                  tuple(p for _, p in pads), pre_pad, case.groups, case.spatial)
  return len(moments.shift_plan(geometry, case.rank).cells)


def _pads_matter(case, asymmetric):
  """Whether the padding the mode computes pads at all (a 1x1 kernel's SAME pads nothing) and,
  if `asymmetric`, unevenly somewhere: there a mode read the wrong way round (SAME_LOWER as
  SAME, a pre-pad's low and high swapped, REFLECT as symmetric) gives other patches."""
  if not isinstance(case.padding, str) or case.padding == "VALID":
    return True
  pads = [p for _, p in _pads(case.padding, case.spatial, case.kernel, case.strides,
                              case.dilation)]
  if asymmetric:
    return any(lo != hi for lo, hi in pads)
  return any(lo or hi for lo, hi in pads)


def _draw_cases(seed, count, num_cheap, cheap_cells, max_cells):
  """`count` layers drawn at random, cycling through every (rank, padding) pair so that each
  appears; redrawn until every output dimension is at least 1, the padding mode pads (unevenly
  on the first pass through the pairs: `_pads_matter`) and the fully shifted plan has at most
  `cheap_cells` products (the first `num_cheap` cases) or `max_cells`."""
  rng = np.random.default_rng(seed)
  forms = [(rank, p) for rank in (2, 1, 3) for p in PADDINGS[rank]]
  cases = []
  for i in range(count):
    rank, padding = forms[i % len(forms)]
    module = MODULES[i % len(MODULES)]
    while True:
      kernel = KERNELS[rank][rng.integers(len(KERNELS[rank]))]
      strides = tuple(int(v) for v in rng.integers(1, 4, rank))
      dilation = tuple(int(v) for v in rng.integers(1, 3, rank))
      grouping = rng.choice(["1", "2", "depthwise"])
      if grouping == "depthwise":
        channels = int(rng.integers(2, 5))
        groups, features = channels, channels * int(rng.integers(1, 3))
      else:
        groups = int(grouping)
        channels, features = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 3))
      batch_shape = [(2,), (2,), (3,), (), (2, 2)][rng.integers(5)] if rank < 3 else (1,)
      spatial = tuple(int(v) for v in rng.integers(3, 12 if rank < 3 else 6, rank))
      case = Case(module, kernel, strides, dilation, padding, groups, channels, features,
                  bool(rng.integers(2)), spatial, batch_shape)
      if (min(_out_spatial(case)) >= 1 and _pads_matter(case, asymmetric=i < len(forms)) and
          _cells(case) <= (cheap_cells if i < num_cheap else max_cells)):
        break
    cases.append(case)
  return cases


# The first pass through the (rank, padding) pairs runs by default; the rest: `_marks`.
NUM_DEFAULT = len([p for rank in (2, 1, 3) for p in PADDINGS[rank]])
CASES = _draw_cases(seed=27, count=48, num_cheap=NUM_DEFAULT, cheap_cells=60, max_cells=250)


def test_the_grid_covers_what_the_issue_lists():
  """Guards the random draw: every padding form, stride, dilation, kernel, grouping, bias and
  odd and even sizes, and the default run already every padding form."""
  assert {(c.rank, str(c.padding)) for c in CASES[:NUM_DEFAULT]} == {
      (rank, str(p)) for rank in PADDINGS for p in PADDINGS[rank]}
  two_d = [c for c in CASES if c.rank == 2]
  assert {c.kernel for c in two_d} == set(KERNELS[2])
  assert {s for c in CASES for s in c.strides} == {1, 2, 3}
  assert {d for c in CASES for d in c.dilation} == {1, 2}
  assert {"dw" if c.groups == c.channels > 1 else min(c.groups, 2) for c in CASES} == {
      1, 2, "dw"}
  assert {c.bias for c in CASES} == {True, False}
  assert {n % 2 for c in CASES for n in c.spatial} == {0, 1}
  assert {c.module for c in CASES} == set(MODULES)
  # Strides and dilations that differ between dimensions, a stride above a dilated kernel's
  # span (input positions no tap reads), and cropping pads with a stride.
  assert any(len(set(c.strides)) > 1 for c in two_d)
  assert any(len(set(c.dilation)) > 1 for c in two_d)
  assert any(s > (k - 1) * d + 1 for c in CASES
             for s, k, d in zip(c.strides, c.kernel, c.dilation))
  assert any(max(c.strides) > 1 and "-" in str(c.padding) for c in CASES)
  assert {len(c.batch_shape) for c in CASES} == {0, 1, 2}


def _params(module, x, seed):
  """Parameters from NumPy (a JAX initializer compiles for seconds); non-zero biases."""
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), x))["params"]
  rng = np.random.default_rng(seed)
  return {"params": {k: (rng.standard_normal(v.shape) * (0.5 if k == "kernel" else 0.3)
                         ).astype(np.float32) for k, v in shapes.items()}}


def _marks(index: int, case: Case):
  """The first pass runs by default; of the rest, CI (slow) keeps the 5x5 kernels the first
  pass lacks, and --runslow (extended) adds the others: the suite stays within 15 minutes."""
  if index < NUM_DEFAULT:
    return ()
  return pytest.mark.slow if 5 in case.kernel else pytest.mark.extended


@pytest.mark.parametrize("case", [pytest.param(c, id=str(c), marks=_marks(i, c))
                                  for i, c in enumerate(CASES)])
def test_every_plan_equals_brute_force(case):
  """Each num_shifted from 0 to the rank, on the geometry the capture reads off the layer.

  Tolerance: every entry of A is a sum of at most R = (examples x output locations) products
  of float32 inputs, accumulated in float32 in some order (one cell's dot, the bias window's sum
  over examples), the cells then added in float64 (host) or float32 (traced). Any order of such
  a sum errs by at most R * U32 * sum |x_i x_j| <= R * U32 * sqrt(A_ii A_jj) (Cauchy-Schwarz; the
  bias entry's diagonal is R). The test allows twice that for the host assembly (second-order
  terms) and four times for the traced float32 one (its own sums of cells and bias windows).
  A dropped or doubled border term moves an entry by about 1/R of sqrt(A_ii A_jj), far above
  it (R is at most a few hundred here).
  """
  module = case.build()
  rng = np.random.default_rng(zlib.crc32(str(case).encode()))
  x = rng.standard_normal(case.batch_shape + case.spatial + (case.channels,)).astype(np.float32)
  variables = _params(module, x, seed=1)
  calls, uncovered, _ = capture.trace_calls(module, variables, jnp.asarray(x), {})
  assert not uncovered and len(calls) == 1
  call = calls[0]
  geometry, rank = call.geometry, case.rank
  rows = math.prod(case.batch_shape) * math.prod(_out_spatial(case))
  assert geometry.out_spatial == _out_spatial(case) and call.rows == rows
  assert call.layer.num_blocks == case.groups
  assert call.layer.a_dim == math.prod(case.kernel) * case.channels // case.groups + case.bias

  plans = [dataclasses.replace(call, num_shifted=m) for m in range(rank + 1)]

  @jax.jit
  def run(variables, x):
    flat = x.reshape((-1,) + x.shape[x.ndim - rank - 1:])  # as capture._input_parts
    parts = [moments.conv_input_parts(flat, geometry, case.bias, p.num_shifted) for p in plans]
    traced = [capture.assemble_input_moment(p, q, 1, jnp, jnp.float32)
              for p, q in zip(plans, parts)]
    return module.apply(variables, x), parts, traced

  y, parts, traced = jax.device_get(run(variables, x))

  # The reference patches are what the layer multiplies: they reproduce its output.
  patches = brute_patches(case, x)
  kernel = np.asarray(variables["params"]["kernel"], np.float64)
  per_group_out = case.features // case.groups
  weights = kernel.reshape(-1, case.features).reshape(-1, case.groups, per_group_out)
  expected_y = np.einsum("rgi,igo->rgo", patches, weights).reshape(-1, case.features)
  scale = np.einsum("rgi,igo->rgo", np.abs(patches), np.abs(weights)).reshape(-1, case.features)
  if case.bias:
    expected_y = expected_y + variables["params"]["bias"]
    scale = scale + np.abs(variables["params"]["bias"])
  y = np.asarray(y, np.float64).reshape(-1, case.features)
  assert y.shape == expected_y.shape
  assert np.all(np.abs(y - expected_y) <= 1e-5 * scale + 1e-30), "brute-force patches are wrong"

  expected = brute_moment(case, patches)
  diagonal = np.sqrt(np.einsum("gii->gi", expected))
  bound = rows * U32 * diagonal[:, :, None] * diagonal[:, None, :]
  for plan, part, device in zip(plans, parts, traced):
    host = capture.assemble_input_moment(plan, part, 1)
    assert host.dtype == np.float64 and host.shape == expected.shape
    for name, got, factor in (("host float64", host, 2), ("traced float32", device, 4)):
      error = np.abs(np.asarray(got, np.float64) - expected)
      worst = np.unravel_index(np.argmax(error - factor * bound), error.shape)
      assert np.all(error <= factor * bound), (
          f"num_shifted={plan.num_shifted} ({name}): entry {worst} is {got[worst]!r}, "
          f"expected {expected[worst]!r}")


# ---------------------------------------------------------------------------------------------
# Whole models: the shifted plans the chooser picks against the patch path

NUM_CLASSES = 10


class BorderNet(nn.Module):
  """Small layers of every kind, 8x8 inputs: most of their shifted plans' cells are borders.

  The chooser leaves such small layers to im2col unless a product is free (CELL_COST = 0)."""

  @nn.compact
  def __call__(self, x, train=False):
    del train
    shared = nn.Conv(8, (3, 3), padding="SAME", name="shared")  # called twice
    x = jnp.tanh(shared(x))
    x = jnp.tanh(layers.Conv(8, (3, 3), padding="REFLECT", kernel_dilation=(1, 2),
                             feature_group_count=2, implementation="xla", name="reflect")(x))
    x = jnp.tanh(nn.Conv(8, (3, 3), padding="CIRCULAR", feature_group_count=8, use_bias=False,
                         name="circular_depthwise")(x))
    x = jnp.tanh(shared(x))
    n, h, w, c = x.shape
    x = jnp.tanh(nn.Conv(8, (3,), padding="CAUSAL", kernel_dilation=2,
                         name="causal_1d")(x.reshape(n, h * w, c))).reshape(n, h, w, -1)
    x = jnp.tanh(nn.Conv(16, (2, 3), strides=(2, 3), padding=((1, 0), (2, -1)),
                         name="explicit_strided")(x))
    x = jnp.tanh(layers.Conv(16, (3, 3), strides=2, padding="SAME_LOWER", use_bias=False,
                             implementation="im2col", name="same_lower_s2")(x))
    return nn.Dense(NUM_CLASSES, name="logits")(x.reshape(n, -1))


def _numpy_variables(model, images, seed):
  """Variables from NumPy, shaped by the model's init (not run: a JAX initializer compiles for
  seconds): He-normal kernels, small non-zero biases and batch-norm statistics."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), images[:1], train=False))
  rng = np.random.default_rng(seed)

  def leaf(path, shape):
    name = path[-1].key
    if name == "kernel":
      scale = np.sqrt(2 / math.prod(shape.shape[:-1]))
      return (scale * rng.standard_normal(shape.shape)).astype(np.float32)
    if name in ("bias", "mean"):
      return (0.1 * rng.standard_normal(shape.shape)).astype(np.float32)
    return (1 + 0.1 * rng.standard_normal(shape.shape)).astype(np.float32)  # scale, var

  return jax.tree_util.tree_map_with_path(leaf, shapes)


def _plans(model, variables, images, chunk):
  """The calls the capture makes of a batch of `chunk` examples (num_shifted as chosen)."""
  calls, _, _ = capture.trace_calls(model, variables, jnp.asarray(images[:chunk]),
                                    {"train": False})
  return calls


def _factors(monkeypatch, model, variables, images, labels, chunk, patches):
  """kfac_factors with the chooser's plans, or (patches) with num_shifted 0 everywhere."""
  with monkeypatch.context() as patch:
    if patches:
      patch.setattr(moments, "choose_num_shifted", lambda *args: 0)
    return fisher.kfac_factors(model, variables, images, labels, batch_chunk=chunk)


def _normalized_difference(reference, other):
  """max |other - reference| / sqrt(ref_ii ref_jj) over a factor stack's entries (a scale on
  which float32 roundoff of a sum of products is uniform); entries with a zero diagonal must
  agree exactly."""
  diagonal = np.sqrt(np.maximum(np.einsum("gii->gi", reference), 0))
  scale = diagonal[:, :, None] * diagonal[:, None, :]
  error = np.abs(other - reference)
  assert np.all(error[scale == 0] == 0)
  return float(np.max(error[scale > 0] / scale[scale > 0], initial=0.0))


def _feature_slack(reference, other, floor):
  """Per entry of the CDF features, how far `other`'s may lie from `reference`'s when only the
  factors' difference separates them.

  Weyl's inequality: each eigenvalue of a factor moves by at most the Frobenius norm d of the
  factor's difference, so a kept log-eigenvalue product log a + log g moves by at most
  d_A / (a - d_A) + d_G / (g - d_G). A product that close to a bin edge may change bins, and
  a factor eigenvalue that close to the floor (which moves by floor * d) may be kept by one and
  dropped by the other. With k such products among the n certainly kept and in range, each CDF
  entry moves by at most 2k / (n - k)."""
  slack = []
  for ref, oth in zip(reference, other):
    edges = spectrum.bin_edges(ref.num_weights)
    certain, uncertain = 0, 0
    for a_ref, a_oth, g_ref, g_oth in zip(ref.A, oth.A, ref.G, oth.G):
      logs, moves, unsure = [], [], []
      for ref_matrix, oth_matrix in ((a_ref, a_oth), (g_ref, g_oth)):
        values = np.linalg.eigvalsh(ref_matrix)
        d = np.linalg.norm(ref_matrix - oth_matrix)
        bound = max(floor * values.max(), 0.0)
        kept = values - d > bound + floor * d
        dropped = values + d < bound - floor * d
        unsure.append(~kept & ~dropped)
        logs.append(np.where(kept, np.log(np.where(kept, values, 1.0)), np.nan))
        moves.append(np.where(kept, d / np.where(kept, values - d, 1.0), 0.0))
      products = logs[0][:, None] + logs[1][None, :]
      move = moves[0][:, None] + moves[1][None, :]
      index = np.clip(np.searchsorted(edges, products), 1, len(edges) - 1)
      gap = np.minimum(np.abs(products - edges[index - 1]), np.abs(edges[index] - products))
      near = np.isfinite(products) & (gap <= move)
      either = unsure[0][:, None] | unsure[1][None, :]
      in_range = np.isfinite(products) & (products >= edges[0]) & (products <= edges[-1])
      uncertain += int(np.sum(near | either))
      certain += int(np.sum(in_range & ~near))
    entries = len(edges) - 1
    if certain <= uncertain:
      slack.append(np.full(entries, np.inf))
    else:
      slack.append(np.full(entries, 2 * uncertain / (certain - uncertain)))
  return np.concatenate(slack)


def _features(factors, floor):
  log_eigs, _ = fisher.log_eigenvalues(factors, eigenvalue_floor=floor)
  return fisher.cdf_features(log_eigs, [f.num_weights for f in factors])


def _assert_same_factors(calls, num_chunks, shifted, patches):
  """A and G of the shifted plans equal the patch path's within float32 roundoff; returns the
  largest normalized differences {path: (A, G)}.

  Tolerance: 4 sqrt(R) U32 on the normalized scale, R the rows a layer's sums run over:
  sqrt(R) U32 is the usual size of the rounding error of a float32 sum of R terms, and summing
  in another order (cells, chunks) moves it by about that (measured: at most half the
  tolerance). The worst case, 2 R U32, would be hundreds of times looser; the border terms a
  plan could lose are checked exactly by the brute force above.
  """
  rows: dict = {}
  for call in calls:
    rows[call.layer.path] = rows.get(call.layer.path, 0) + call.rows * num_chunks
  differences = {}
  for s, p in zip(shifted, patches):
    assert s.path == p.path and s.A.shape == p.A.shape and s.G.shape == p.G.shape
    tolerance = 4 * math.sqrt(rows[s.path]) * U32
    differences[s.path] = (_normalized_difference(p.A, s.A), _normalized_difference(p.G, s.G))
    assert max(differences[s.path]) <= tolerance, (s.path, differences[s.path], tolerance)
  return differences


def _assert_same_features(shifted, patches, floor):
  """The CDF features agree but where roundoff may move a log-eigenvalue across a bin edge or
  the floor (`_feature_slack`)."""
  difference = np.abs(_features(shifted, floor).astype(np.float64) - _features(patches, floor))
  slack = _feature_slack(patches, shifted, floor)
  assert np.all(difference <= slack + 1e-7), np.max(difference - slack)


def test_border_cells_match_patches_end_to_end(monkeypatch):
  """Every layer kind shifted (a shared layer, dilated grouped reflect, circular depthwise,
  causal 1-D, strided explicit with a crop, SAME_LOWER) through the whole capture: chunks of the
  batch accumulated in the scan, the parts assembled on the host. Products are made free so
  that the chooser shifts these small layers."""
  monkeypatch.setattr(moments, "CELL_COST", 0)
  model = BorderNet()
  rng = np.random.default_rng(0)
  images = rng.standard_normal((8, 8, 8, 8)).astype(np.float32)
  labels = np.arange(8) % NUM_CLASSES
  variables = _numpy_variables(model, images, seed=1)
  chunk = 4
  calls = _plans(model, variables, images, chunk)
  plans = {call.key: call.num_shifted for call in calls if call.geometry is not None}
  assert len(plans) == 7 and min(plans.values()) >= 1 and max(plans.values()) == 2, plans
  shifted = _factors(monkeypatch, model, variables, images, labels, chunk, patches=False)
  patches = _factors(monkeypatch, model, variables, images, labels, chunk, patches=True)
  _assert_same_factors(calls, len(images) // chunk, shifted, patches)
  for floor in (0.0, 1e-6):
    _assert_same_features(shifted, patches, floor)


def _cifar_batch(size, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.standard_normal((size, 32, 32, 3)).astype(np.float32)
  return images, np.arange(size) % NUM_CLASSES


@pytest.mark.slow
def test_resnet8_features_equal_the_patch_path(monkeypatch):
  """The chooser's own plans (CELL_COST as shipped) on ResNet-56's layer shapes at one block per
  stage: at 16 examples per chunk its stride-1 convolutions (32x32x16, 16x16x32, 8x8x64) shift
  one dimension, the 3-channel stem and the stride-2 ones gather patches. Two chunks: the
  parts are accumulated in the scan."""
  model = models.ResNetCIFAR(act=jnp.tanh, depth=8, num_classes=NUM_CLASSES,
                             conv_implementation="xla")
  images, labels = _cifar_batch(32)
  variables = _numpy_variables(model, images, seed=1)
  chunk = 16
  calls = _plans(model, variables, images, chunk)
  assert [c.num_shifted for c in calls if c.geometry is not None] == [0, 1, 1, 0, 1, 0, 1]
  shifted = _factors(monkeypatch, model, variables, images, labels, chunk, patches=False)
  patches = _factors(monkeypatch, model, variables, images, labels, chunk, patches=True)
  differences = _assert_same_factors(calls, len(images) // chunk, shifted, patches)
  assert max(a for a, _ in differences.values()) > 0  # the shifted layers did run apart
  for floor in (0.0, 1e-6):
    _assert_same_features(shifted, patches, floor)


@pytest.mark.extended
@pytest.mark.parametrize("name", ["allcnnc", "resnet56"])
def test_published_models_match_within_chunk_roundoff(monkeypatch, name):
  """Issue 27's check: the features of All-CNN-C and ResNet-56 (batch 32 in one chunk, planned
  by the chooser: All-CNN-C shifts both dimensions of its 32x32x96 and 16x16x192 stride-1
  layers and one of four others, ResNet-56 one of each of its 52 stride-1 layers) equal the patch
  path's within the host path's own roundoff, measured as the patch path with chunks of 32
  against 16. About 20 s each on 2 cores, so --runslow only; ResNet-8 above covers
  ResNet-56's layer shapes by default."""
  make = {"allcnnc": models.AllCNNC, "resnet56": models.ResNet56}[name]
  model = make(act=jnp.tanh, num_classes=NUM_CLASSES, conv_implementation="xla")
  images, labels = _cifar_batch(32)
  variables = _numpy_variables(model, images, seed=1)
  calls = _plans(model, variables, images, 32)
  assert max(c.num_shifted for c in calls if c.geometry is not None) == (
      2 if name == "allcnnc" else 1)
  shifted = _factors(monkeypatch, model, variables, images, labels, 32, patches=False)
  patches = _factors(monkeypatch, model, variables, images, labels, 32, patches=True)
  halves = _factors(monkeypatch, model, variables, images, labels, 16, patches=True)
  differences = _assert_same_factors(calls, 1, shifted, patches)
  roundoff = {f.path: _normalized_difference(p.A, f.A) for f, p in zip(halves, patches)}
  # Layer by layer the two orders of summation scatter; over the model they match in size.
  assert max(a for a, _ in differences.values()) <= 2 * max(roundoff.values())
  _assert_same_features(shifted, patches, 1e-6)
  assert np.all(np.abs(_features(halves, 1e-6) - _features(patches, 1e-6)) <=
                _feature_slack(patches, halves, 1e-6) + 1e-7)
