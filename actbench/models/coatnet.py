"""CoAtNet (Dai, Liu, Le, Tan 2021, "CoAtNet: Marrying Convolution and Attention for All Data
Sizes"), the C-C-T-T layout, with the activation as a field like every actbench model.

Stages (each of S1..S4 halves the resolution in its first block; 224 px -> 112, 56, 28, 14, 7):

  S0  stem: depths[0] 3x3 convs of dims[0] (the first stride 2), BN + act between them.
  S1, S2  MBConv blocks, pre-norm: x + Proj1x1(SE(act(BN(DW3x3(act(BN(Expand1x1(BN(x))))))))).
      The hidden width is mbconv_expansion * the block's input width (the paper: "expands the
      channel size of the input by 4x"). The depthwise conv has stride 2 in a stage's first
      block, whose shortcut is Conv1x1(MaxPool2x2(x)) instead of x. The paper's formula
      x + Module(Norm(x)) shows only the pre-norm; inside, the expand and depthwise convs are
      each followed by batch norm as in the standard (EfficientNet) MBConv the paper builds on,
      and have no bias (the norms' offsets replace it).
      Squeeze-excitation: global mean -> Dense(floor(se_ratio * block input width)) -> act
      -> Dense -> sigmoid gate on the channels.
  S3, S4  Transformer blocks, pre-norm LayerNorm:
        x <- x + Attention(LN(x)),   first block: x <- Proj(Pool(x)) + Attention(Pool(LN(x)))
        x <- x + MLP(LN(x)),         MLP = Dense(mlp_ratio * dim) -> act -> Dense(dim)
      Pool is 2x2/2 max pooling, Proj a 1x1 conv where the width changes (only there). The
      attention has dim // head_dim heads, q/k/v/output projections with biases, and a learned
      relative position bias added to the logits before the softmax (the paper's
      translation-equivariant w_{i-j}): a table of (2H-1)(2W-1) x heads entries indexed by the
      2-D offset of query and key, H x W the stage's feature map at call time (so the parameter
      count depends on the input size).
  Head: global average pool -> LayerNorm -> Dense num_classes.

Stochastic depth (drop_path_rate) drops whole residual branches per example in training,
the rate rising linearly from 0 at the first S1 block to drop_path_rate at the last S4 block
(needs the 'dropout' rng).

Activation sites: depths[0] - 1 in the stem, 3 per MBConv block (after the expand conv, after
the depthwise conv, and the SE reduction), 1 per transformer block (the MLP): 1 + 3 * 5 + 7 = 23
for CoAtNet-0. The paper uses GELU at all of them. Not replaced: the SE sigmoid gate and the
attention softmax. Both compute weights in (0, 1) that rescale features (a gate, a
normalized mixture), not a nonlinearity between layers; an arbitrary candidate there would
change what those mechanisms are rather than which activation the network uses.

Numerics: computation in `dtype`; batch norm, layer norm and the softmax (with its logits and
the position bias) in float32 whatever `dtype` is; parameters float32; logits float32.

Initialization: conv kernels He normal like the other actbench models; Dense kernels He normal
where an activation follows (MLP in, SE reduction) and for the classifier (as in the ResNets),
LeCun normal (variance 1 / fan_in, Flax's default) where the output feeds the softmax, the
sigmoid gate or a residual sum (q/k/v/output projections, MLP out, SE expansion), keeping
those at unit scale; biases zero; the position-bias table truncated normal, std 0.02.

With 1000 classes at 224 px CoAtNet-0 has 24,242,484 parameters; the paper says 25M. The 3% lies
in details the paper leaves open: counting the MBConv expansion from the block's output width
(as some implementations do) would add 149,504, a 768-wide pre-logits Dense in the head 590,592,
together 24,982,580.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from actbench.models.layers import Conv

Activation = Callable[[jax.Array], jax.Array]

he_normal = nn.initializers.he_normal()
lecun_normal = nn.initializers.lecun_normal()


# The norms run in float32 whatever the computation dtype: bfloat16's 8 significant bits are too
# few for the variance of wide layers, and the cost is small next to the matmuls.
def _batch_norm(x: jax.Array, train: bool) -> jax.Array:
  y = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                   dtype=jnp.float32)(x.astype(jnp.float32))
  return y.astype(x.dtype)


def _layer_norm(x: jax.Array) -> jax.Array:
  return nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32)(x.astype(jnp.float32)).astype(x.dtype)


def _max_pool_2x2(x: jax.Array) -> jax.Array:
  # Sizes are even (checked at the input), so the 2x2/2 windows tile the map exactly.
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _drop_path(module: nn.Module, x: jax.Array, rate: float, train: bool) -> jax.Array:
  if not train or rate == 0.0:
    return x
  keep = 1.0 - rate
  # One draw per example (whole branches are dropped); kept ones scaled so eval needs no change.
  mask = jax.random.bernoulli(module.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / keep, jnp.zeros_like(x))


def relative_position_index(height: int, width: int) -> np.ndarray:
  """(HW, HW) int: the table row of query i and key j (row-major positions).

  Row (dy + H - 1) * (2W - 1) + (dx + W - 1) for the offset (dy, dx) = pos(i) - pos(j).
  """
  ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  ys, xs = ys.reshape(-1), xs.reshape(-1)
  dy = ys[:, None] - ys[None, :] + height - 1
  dx = xs[:, None] - xs[None, :] + width - 1
  return dy * (2 * width - 1) + dx


class RelativePositionBias(nn.Module):
  """The learned 2-D relative position bias, (heads, HW, HW) float32, for an H x W map.

  Its own module so that the Fisher features list it by name among the uncovered weights.
  """

  num_heads: int

  @nn.compact
  def __call__(self, height: int, width: int) -> jax.Array:
    table = self.param("table", nn.initializers.truncated_normal(0.02),
                       ((2 * height - 1) * (2 * width - 1), self.num_heads), jnp.float32)
    return jnp.transpose(table[relative_position_index(height, width)], (2, 0, 1))


class Attention(nn.Module):
  """Multi-head self-attention over the positions of an (N, H, W, C) map, with the bias."""

  features: int
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n, h, w, _ = x.shape
    head_dim = self.features // self.num_heads
    dense = functools.partial(nn.Dense, dtype=self.dtype, kernel_init=lecun_normal)
    tokens = x.reshape(n, h * w, x.shape[-1])
    q, k, v = (dense(self.features, name=name)(tokens).reshape(n, h * w, self.num_heads, head_dim)
               for name in ("query", "key", "value"))
    logits = jnp.einsum("nqhd,nkhd->nhqk", q, k,
                        preferred_element_type=jnp.float32) / np.sqrt(head_dim)
    logits = logits + RelativePositionBias(self.num_heads, name="relative_position_bias")(h, w)
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)  # fixed: not an act site
    out = jnp.einsum("nhqk,nkhd->nqhd", weights, v).reshape(n, h * w, self.features)
    return dense(self.features, name="out")(out).reshape(n, h, w, self.features)


class MBConvBlock(nn.Module):
  """Pre-norm MBConv with squeeze-excitation; see the module docstring."""

  features: int
  act: Activation
  downsample: bool = False
  expansion: int = 4
  se_ratio: float = 0.25
  drop_path: float = 0.0
  dtype: Any = jnp.float32
  conv_implementation: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = functools.partial(Conv, dtype=self.dtype, kernel_init=he_normal,
                             implementation=self.conv_implementation)
    hidden = x.shape[-1] * self.expansion
    y = conv(hidden, (1, 1), use_bias=False)(_batch_norm(x, train))
    y = self.act(_batch_norm(y, train))
    y = conv(hidden, (3, 3), strides=2 if self.downsample else 1, padding=1,
             feature_group_count=hidden, use_bias=False)(y)
    y = self.act(_batch_norm(y, train))
    squeezed = jnp.mean(y, axis=(1, 2))
    squeezed = self.act(nn.Dense(max(1, int(x.shape[-1] * self.se_ratio)), dtype=self.dtype,
                                 kernel_init=he_normal)(squeezed))
    gate = nn.Dense(hidden, dtype=self.dtype, kernel_init=lecun_normal)(squeezed)
    y = y * jax.nn.sigmoid(gate)[:, None, None, :]  # fixed: not an act site
    y = conv(self.features, (1, 1))(y)
    shortcut = conv(self.features, (1, 1))(_max_pool_2x2(x)) if self.downsample else x
    return shortcut + _drop_path(self, y, self.drop_path, train)


class TransformerBlock(nn.Module):
  """Pre-norm attention + MLP block with relative position bias; see the module docstring."""

  features: int
  act: Activation
  downsample: bool = False
  head_dim: int = 32
  mlp_ratio: int = 4
  drop_path: float = 0.0
  dtype: Any = jnp.float32
  conv_implementation: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    y = _layer_norm(x)
    shortcut = x
    if self.downsample:
      y, shortcut = _max_pool_2x2(y), _max_pool_2x2(x)
    if shortcut.shape[-1] != self.features:
      shortcut = Conv(self.features, (1, 1), dtype=self.dtype, kernel_init=he_normal,
                      implementation=self.conv_implementation)(shortcut)
    y = Attention(self.features, self.features // self.head_dim, dtype=self.dtype)(y)
    x = shortcut + _drop_path(self, y, self.drop_path, train)
    y = nn.Dense(self.features * self.mlp_ratio, dtype=self.dtype, kernel_init=he_normal)(
        _layer_norm(x))
    y = nn.Dense(self.features, dtype=self.dtype, kernel_init=lecun_normal)(self.act(y))
    return x + _drop_path(self, y, self.drop_path, train)


class CoAtNet(nn.Module):
  """CoAtNet; the defaults are CoAtNet-0. See the module docstring.

  Attributes (beyond the common act, num_classes, dtype, conv_implementation):
    depths: blocks of S0..S4 (S0: stem convs).
    dims: widths of S0..S4; dims[3] and dims[4] must be multiples of head_dim.
    head_dim: width of an attention head.
    mbconv_expansion: MBConv hidden width / block input width.
    mlp_ratio: transformer MLP hidden width / block width.
    se_ratio: SE reduction width / MBConv block input width.
    drop_path_rate: stochastic depth of the last block (linear from 0 at the first).
  """

  act: Activation
  num_classes: int = 10
  depths: Sequence[int] = (2, 2, 3, 5, 2)
  dims: Sequence[int] = (64, 96, 192, 384, 768)
  head_dim: int = 32
  mbconv_expansion: int = 4
  mlp_ratio: int = 4
  se_ratio: float = 0.25
  drop_path_rate: float = 0.0
  dtype: Any = jnp.float32
  conv_implementation: str = "auto"

  def _check(self, x: jax.Array):
    if len(self.depths) != 5 or len(self.dims) != 5 or min(self.depths) < 1:
      raise ValueError(f"CoAtNet needs 5 stages of at least one block each, got depths "
                       f"{tuple(self.depths)} and dims {tuple(self.dims)}.")
    if self.dims[3] % self.head_dim or self.dims[4] % self.head_dim:
      raise ValueError(f"Transformer widths {tuple(self.dims[3:])} must be multiples of "
                       f"head_dim {self.head_dim}.")
    if x.ndim != 4:
      raise ValueError(f"CoAtNet takes NHWC images, got an input of shape {x.shape}.")
    height, width = x.shape[1:3]
    if height % 32 or width % 32 or min(height, width) < 64:
      raise ValueError(f"CoAtNet needs an input size whose height and width are multiples of "
                       f"32 and at least 64 (5 halvings; S4 at least 2x2), got {height}x{width}.")

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    self._check(x)
    x = jnp.asarray(x, self.dtype)
    for i in range(self.depths[0]):
      if i:
        x = self.act(_batch_norm(x, train))
      x = Conv(self.dims[0], (3, 3), strides=2 if i == 0 else 1, padding=1,
               use_bias=i == self.depths[0] - 1, dtype=self.dtype, kernel_init=he_normal,
               implementation=self.conv_implementation, name=f"stem_conv{i}")(x)
    num_blocks = sum(self.depths[1:])
    block_index = 0
    for stage in range(1, 5):
      for i in range(self.depths[stage]):
        rate = self.drop_path_rate * block_index / max(num_blocks - 1, 1)
        block_index += 1
        common = dict(features=self.dims[stage], act=self.act, downsample=i == 0, drop_path=rate,
                      dtype=self.dtype, conv_implementation=self.conv_implementation,
                      name=f"s{stage}_block{i}")
        if stage <= 2:
          block = MBConvBlock(expansion=self.mbconv_expansion, se_ratio=self.se_ratio, **common)
        else:
          block = TransformerBlock(head_dim=self.head_dim, mlp_ratio=self.mlp_ratio, **common)
        x = block(x, train=train)
    x = _layer_norm(jnp.mean(x, axis=(1, 2)))
    x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=he_normal, name="head")(x)
    return x.astype(jnp.float32)


class CoAtNet0(CoAtNet):
  """CoAtNet-0: depths (2, 2, 3, 5, 2), dims (64, 96, 192, 384, 768)."""


__all__ = ["Attention", "CoAtNet", "CoAtNet0", "MBConvBlock", "RelativePositionBias",
           "TransformerBlock", "relative_position_index"]
