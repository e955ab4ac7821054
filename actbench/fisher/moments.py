"""Second moments of a layer's inputs (the K-FAC factor A) and output gradients (G), as sums.

Everything here returns SUMS over the rows it is given (examples x locations); the caller
divides by B (for A) or B*T (for G) once the whole batch has been seen. All of it runs inside
the traced program, except `assemble_conv_moment`, which the population programs leave to the
host. Each result has a leading block axis: one block for Dense and ordinary Conv layers,
`feature_group_count` blocks for grouped and depthwise convolutions (block g holds the inputs
and outputs of group g only, see `actbench.fisher` for why).

Conv inputs: the row vector of an output location is its kh*kw*C_in patch, ordered like
`kernel.reshape(-1, features)` (taps row-major, then channels), followed by a 1 when the layer
has a bias. Forming all patches and multiplying them (im2col) costs rows * (k*k*C)^2 flops,
9x a 3x3 convolution's own cost. Most of that is redundant: the block of A for taps (t1, t2) is
sum_u x[u] x[u + d]^T over the input positions u the tap t1 visits, and tap pairs with the same
offset d and stride phase visit the same positions except for a strip at the border. So along
the first `num_shifted` spatial dimensions the taps are not gathered into patches; instead each
such class of tap pairs is summed once per "cell" (a rectangle of positions where the pairs'
ranges agree), and a pair's block is the sum of its cells. Positions that only ever see zero
padding are skipped. With both dimensions shifted a 3x3 stride-1 layer needs 13 large C x C
products (one per tap offset; offsets d and -d share one, A being symmetric) where im2col's
(9C x 9C) product costs 81; with 0 shifted dimensions this is plain im2col.
`choose_num_shifted` picks the cheapest, charging each product CELL_COST flops for the time
XLA:CPU takes to compile and launch it.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import math

import jax.numpy as jnp
import numpy as np
from jax import lax

# What one more product (cell) costs, in flops of one batch chunk: on XLA:CPU each adds about
# 35 ms of compile time (measured on All-CNN-C; amortized over a population) and a launch per
# chunk. With this value tiny layers use im2col, and All-CNN-C's large stride-1 layers shift
# both dimensions.
CELL_COST = 1e8


def _ceil_div(a: int, b: int) -> int:
  return -(-a // b)


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
  """What a convolution does to its (already flattened to (N, *spatial, C)) input.

  Attributes:
    kernel_size, strides, kernel_dilation: per spatial dimension.
    pads: the zero padding (low, high) per spatial dimension, as lax.pad applies it (negative
      values crop), after any `pre_pad`.
    pre_pad: ('wrap' | 'reflect', pairs) for CIRCULAR / REFLECT padding, applied with jnp.pad
      before the zero padding; None otherwise.
    groups: feature_group_count.
    in_spatial: the spatial shape of the input (before any padding).
  """

  kernel_size: tuple[int, ...]
  strides: tuple[int, ...]
  kernel_dilation: tuple[int, ...]
  pads: tuple[tuple[int, int], ...]
  pre_pad: tuple | None
  groups: int
  in_spatial: tuple[int, ...]

  @property
  def rank(self) -> int:
    return len(self.kernel_size)

  @property
  def padded_spatial(self) -> tuple[int, ...]:
    """Spatial shape after pre_pad and pads."""
    sizes = self.in_spatial
    if self.pre_pad is not None:
      sizes = tuple(n + lo + hi for n, (lo, hi) in zip(sizes, self.pre_pad[1]))
    return tuple(n + lo + hi for n, (lo, hi) in zip(sizes, self.pads))

  @property
  def real_range(self) -> tuple[tuple[int, int], ...]:
    """Per dimension, the padded positions [lo, hi) that hold input values (not zero pads)."""
    sizes = self.in_spatial
    if self.pre_pad is not None:
      sizes = tuple(n + lo + hi for n, (lo, hi) in zip(sizes, self.pre_pad[1]))
    ranges = []
    for n, (lo, _), total in zip(sizes, self.pads, self.padded_spatial):
      ranges.append((max(lo, 0), min(lo + n, total)))
    return tuple(ranges)

  @property
  def out_spatial(self) -> tuple[int, ...]:
    return tuple((p - (k - 1) * e - 1) // s + 1 for p, k, e, s in
                 zip(self.padded_spatial, self.kernel_size, self.kernel_dilation, self.strides))


@dataclasses.dataclass(frozen=True)
class ShiftPlan:
  """Static recipe for the conv input moment with the first `num_shifted` dims shifted.

  cells: per cell, per shifted dim (start of the first operand, start of the second, count,
    stride), in padded coordinates.
  pair_cells: for each pair (a, b), a <= b, of shifted taps (row-major flat indices), the cells
    whose sum is that pair's block (empty: the block is zero).
  taps: the shifted taps, row-major, as tuples of tap indices.
  """

  num_shifted: int
  taps: tuple[tuple[int, ...], ...]
  cells: tuple[tuple[tuple[int, int, int, int], ...], ...]
  pair_cells: dict
  positions: int  # sum over cells of the positions (shifted dims) each covers

  def flops(self, geometry: ConvGeometry, channels: int, rows_other: int) -> int:
    """Multiply-adds x 2 of all cell products; rows_other = N * prod(patched out sizes)."""
    patched = math.prod(geometry.kernel_size[self.num_shifted:])
    width = patched * channels // geometry.groups
    return 2 * self.positions * rows_other * geometry.groups * width * width


@functools.lru_cache(maxsize=256)
def shift_plan(geometry: ConvGeometry, num_shifted: int) -> ShiftPlan:
  """The cells and pair->cells map for shifting the first `num_shifted` spatial dims."""
  dims = range(num_shifted)
  k, e, s = geometry.kernel_size, geometry.kernel_dilation, geometry.strides
  out, real = geometry.out_spatial, geometry.real_range
  taps = list(itertools.product(*(range(k[i]) for i in dims)))
  classes = collections.defaultdict(list)
  for a, t1 in enumerate(taps):
    for b in range(a, len(taps)):
      t2 = taps[b]
      key, window = [], []
      for i in dims:
        o1, d = t1[i] * e[i], (t2[i] - t1[i]) * e[i]
        r, q0 = o1 % s[i], o1 // s[i]
        lo, hi = real[i]
        # Output l reads positions s*(l + q0) + r and that + d; keep q = l + q0 where both are
        # real input (a zero pad contributes nothing).
        qa = max(q0, _ceil_div(lo - r, s[i]), _ceil_div(lo - r - d, s[i]))
        qb = min(q0 + out[i], _ceil_div(hi - r, s[i]), _ceil_div(hi - r - d, s[i]))
        key.append((r, d))
        window.append((qa, qb))
      classes[tuple(key)].append(((a, b), tuple(window)))

  cells: list = []
  pair_cells: dict = {}
  positions = 0
  for key, members in classes.items():
    live = [(pair, w) for pair, w in members if all(qa < qb for qa, qb in w)]
    for pair, _ in members:
      pair_cells[pair] = ()
    if not live:
      continue
    segments = []
    for i in dims:
      points = sorted({p for _, w in live for p in w[i]})
      segments.append(list(zip(points[:-1], points[1:])))
    index: dict = {}
    for pair, w in live:
      inside = [[seg for seg in segments[i] if w[i][0] <= seg[0] and seg[1] <= w[i][1]]
                for i in dims]
      members_cells = []
      for cell in itertools.product(*inside):
        if cell not in index:
          index[cell] = len(cells)
          spec = []
          for i, (qa, qb) in zip(dims, cell):
            r, d = key[i]
            spec.append((r + s[i] * qa, r + s[i] * qa + d, qb - qa, s[i]))
          cells.append(tuple(spec))
          positions += math.prod(qb - qa for qa, qb in cell)
        members_cells.append(index[cell])
      pair_cells[pair] = tuple(members_cells)
  return ShiftPlan(num_shifted, tuple(taps), tuple(cells), pair_cells, positions)


def choose_num_shifted(geometry: ConvGeometry, channels: int, batch: int) -> int:
  """The number of leading spatial dims to shift (0: plain im2col) with the lowest cost:
  flops of the products for `batch` examples + CELL_COST per product."""
  best, best_cost = 0, None
  for m in range(geometry.rank + 1):
    plan = shift_plan(geometry, m)
    rows_other = batch * math.prod(geometry.out_spatial[m:])
    cost = plan.flops(geometry, channels, rows_other) + CELL_COST * len(plan.cells)
    if best_cost is None or cost < best_cost:
      best, best_cost = m, cost
  return best


def _pad(x, geometry: ConvGeometry):
  if geometry.pre_pad is not None:
    mode, pairs = geometry.pre_pad
    x = jnp.pad(x, [(0, 0)] + [tuple(p) for p in pairs] + [(0, 0)], mode=mode)
  zero = jnp.zeros((), x.dtype)
  return lax.pad(x, zero, [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in geometry.pads] + [(0, 0, 0)])


def _strided(x, axis: int, start: int, count: int, stride: int):
  begin, limit, step = [0] * x.ndim, list(x.shape), [1] * x.ndim
  begin[axis], limit[axis], step[axis] = start, start + (count - 1) * stride + 1, stride
  return lax.slice(x, begin, limit, step)


def conv_input_moment(x, geometry: ConvGeometry, has_bias: bool, num_shifted: int):
  """Sum over examples and output locations of a a^T per group: (groups, D, D) float32.

  x: the layer input, (N, *spatial, C) (any float dtype; computed in float32).
  D = prod(kernel_size) * C // groups (+ 1 with a bias, the constant last).
  `assemble_conv_moment` of `conv_input_parts`, all traced.
  """
  parts = conv_input_parts(x, geometry, has_bias, num_shifted)
  count = x.shape[0] * math.prod(geometry.out_spatial)
  return assemble_conv_moment(parts, geometry, x.shape[-1], has_bias, num_shifted, count, jnp)


def conv_input_parts(x, geometry: ConvGeometry, has_bias: bool, num_shifted: int) -> dict:
  """The sums A is assembled from (`assemble_conv_moment`), float32; additive over batches.

  Returns {'cells': for each cell of `shift_plan(geometry, num_shifted)`, its product
  (groups, width, width), width = prod(kernel_size[num_shifted:]) * C // groups; 'window' (with
  a bias only): the padded input summed over examples, (*padded_spatial, C), from which each
  tap's sum of patches follows}.

  They hold a few width x width products per tap offset where A has (taps * width)^2 entries.
  A population program accumulates them over its batch chunks and leaves the assembly to the
  host, once per member: building A in the program, chunk after chunk, took a fifth of the
  moment's time and a third of its compilation (measured on All-CNN-C), and so did the bias
  row's per-tap sums over the whole batch.
  """
  x = _pad(x.astype(jnp.float32), geometry)
  rank, groups = geometry.rank, geometry.groups
  channels = x.shape[-1]
  per_group = channels // groups
  out = geometry.out_spatial
  k, e, s = geometry.kernel_size, geometry.kernel_dilation, geometry.strides
  # Gather the patches of the unshifted (trailing) dims into the feature axis, last dim first,
  # so features come out ordered (*kernel_size[num_shifted:], C).
  y = x
  for i in reversed(range(num_shifted, rank)):
    pieces = [_strided(y, i + 1, tap * e[i], out[i], s[i]) for tap in range(k[i])]
    y = jnp.concatenate(pieces, axis=-1) if len(pieces) > 1 else pieces[0]
  patched = math.prod(k[num_shifted:])
  width = patched * per_group  # one group's features in one block of shifted taps

  def operand(starts):
    z = y
    for i, (start, count, stride) in enumerate(starts):
      z = _strided(z, i + 1, start, count, stride)
    return z.reshape(-1, patched, groups, per_group)

  def product(left, right):
    if groups == 1:
      left, right = left.reshape(-1, width), right.reshape(-1, width)
      return jnp.dot(left.T, right, preferred_element_type=jnp.float32)[None]
    return jnp.einsum("nkgc,nlgd->gkcld", left, right).reshape(groups, width, width)

  plan = shift_plan(geometry, num_shifted)
  products = [product(operand([(a, n, st) for a, _, n, st in cell]),
                      operand([(b, n, st) for _, b, n, st in cell])) for cell in plan.cells]
  parts = {"cells": tuple(products)}
  if has_bias:
    # The input summed over examples, as a vector-matrix product (a reduction over the major
    # axis ran at a fraction of the speed); the host takes each tap's window of it.
    flat = x.reshape(x.shape[0], -1)
    parts["window"] = jnp.dot(jnp.ones((1, flat.shape[0]), flat.dtype), flat,
                              preferred_element_type=jnp.float32).reshape(x.shape[1:])
  return parts


def conv_parts_zeros(geometry: ConvGeometry, channels: int, has_bias: bool,
                     num_shifted: int) -> dict:
  """Zeros shaped like `conv_input_parts` (the start of a sum over batch chunks)."""
  groups = geometry.groups
  width = math.prod(geometry.kernel_size[num_shifted:]) * channels // groups
  cells = shift_plan(geometry, num_shifted).cells
  parts = {"cells": tuple(jnp.zeros((groups, width, width), jnp.float32) for _ in cells)}
  if has_bias:
    parts["window"] = jnp.zeros(tuple(geometry.padded_spatial) + (channels,), jnp.float32)
  return parts


def assemble_conv_moment(parts: dict, geometry: ConvGeometry, channels: int, has_bias: bool,
                         num_shifted: int, count, xp=jnp, dtype=None):
  """A (groups, D, D) from `conv_input_parts` summed over `count` output locations x examples.

  channels: C, the layer's input channels.
  xp: jax.numpy (traced) or numpy (on the host).
  dtype: of the result; default float64 with numpy, float32 with jax.numpy. In float64 the
  blocks' sums of cells and the bias row's sums add no float32 rounding.
  """
  if dtype is None:
    dtype = xp.float64 if xp is np else jnp.float32
  plan = shift_plan(geometry, num_shifted)
  cells = [xp.asarray(c, dtype) for c in parts["cells"]]
  groups = geometry.groups
  num_taps = len(plan.taps)
  width = math.prod(geometry.kernel_size[num_shifted:]) * channels // groups
  zero_block = xp.zeros((groups, width, width), dtype)
  rows = [[None] * num_taps for _ in range(num_taps)]
  for (a, b), cell_ids in plan.pair_cells.items():
    block = sum((cells[c] for c in cell_ids[1:]), cells[cell_ids[0]]) if cell_ids else zero_block
    rows[a][b] = block
    if a != b:
      rows[b][a] = xp.swapaxes(block, -1, -2)
  full = xp.block(rows)  # (groups, taps * width, taps * width)
  if not has_bias:
    return full
  # The bias row: each tap's patch summed over its output locations.
  k, e, s, out = (geometry.kernel_size, geometry.kernel_dilation, geometry.strides,
                  geometry.out_spatial)

  def strided(z, axis, start, count, stride):
    index = [slice(None)] * z.ndim
    index[axis] = slice(start, start + (count - 1) * stride + 1, stride)
    return z[tuple(index)]

  # As conv_input_parts gathers its input, on the input summed over examples.
  window = xp.asarray(parts["window"], dtype)
  for i in reversed(range(num_shifted, geometry.rank)):
    window = xp.concatenate([strided(window, i, t * e[i], out[i], s[i]) for t in range(k[i])],
                            axis=-1)
  sums = []
  for tap in plan.taps:
    z = window
    for i, t in enumerate(tap):
      z = strided(z, i, t * e[i], out[i], s[i])
    sums.append(z.reshape(-1, width * groups).sum(0))
  total = xp.stack(sums)  # (taps, patched * C), features ordered (patched, group, channel)
  total = total.reshape(num_taps, -1, groups, channels // groups)
  total = xp.moveaxis(total, 2, 0).reshape(groups, num_taps * width)
  count = xp.full((groups, 1, 1), count, dtype)
  return xp.concatenate([xp.concatenate([full, total[:, None, :]], axis=1),
                         xp.concatenate([total[:, :, None], count], axis=1)], axis=2)


def dense_input_moment(x, has_bias: bool):
  """Sum over rows of a a^T for a Dense input x (..., d_in): (1, D, D) float32."""
  x = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
  moment = jnp.dot(x.T, x, preferred_element_type=jnp.float32)
  if has_bias:
    total = x.sum(0)
    count = jnp.full((1, 1), x.shape[0], jnp.float32)
    moment = jnp.block([[moment, total[:, None]], [total[None, :], count]])
  return moment[None]


def output_moment(g, groups: int):
  """Sum over rows of g g^T per group for output gradients g (..., F): (groups, F/G, F/G)."""
  g = g.reshape(-1, g.shape[-1]).astype(jnp.float32)
  if groups == 1:
    return jnp.dot(g.T, g, preferred_element_type=jnp.float32)[None]
  g = g.reshape(g.shape[0], groups, -1)
  return jnp.einsum("ngo,ngp->gop", g, g)
