"""MobileViTv2 (Mehta & Rastegari 2022, "Separable Self-attention for Mobile Vision Transformers").

The layout is that of Apple's ml-cvnets `mobilevit_v2` configuration, with width multiplier w
(`width_multiplier`; 0.5 is the Act-Bench-ViT network, about 1.4 M parameters with 1000 classes):

  layer0   3x3 conv stride 2 -> BN -> act, make_divisible(clip(32w, 16, 64), 8) channels
  layer1   1 MV2 block, make_divisible(64w, 16) channels
  layer2   2 MV2 blocks (the first stride 2), make_divisible(128w, 8) channels
  layer3-5 an MV2 block with stride 2, then a MobileViTv2 block with attention width
           d = make_divisible(128w / 192w / 256w, 8), make_divisible(256w / 384w / 512w, 8)
           output channels and 2 / 4 / 3 linear-attention blocks on 2x2 patches
  head     global average pool -> dense num_classes

MV2 is MobileNetV2's inverted residual with expansion 2 (`InvertedResidual`). The MobileViTv2
block (`MobileViTv2Block`) mixes locally with a depthwise 3x3 conv, then globally with separable
linear self-attention (`LinearSelfAttention`) across the patches, and has no fusion with its
input (unlike MobileViT v1). The norms inside the attention part are ml-cvnets' "LayerNorm2D":
a GroupNorm with one group over each example's (pixels in patch, patches, channels).

Activation sites (`act`): the stem; after the expansion and the depthwise conv of every MV2
block; after the depthwise conv of each MobileViTv2 block; in the feed-forward network of each
attention block. That is 1 + 2 + 2*2 + 3*(2 + 1) + (2 + 4 + 3) = 25. Not replaced: the relu on
the values inside the linear attention (`jax.nn.relu`): it is part of how the paper defines the
attention's value branch, like the softmax over patches (not an activation site either), rather
than a nonlinearity between layers. The original uses swish at every `act` site.

Convolutions are `layers.Conv`, the attention and feed-forward projections `nn.Dense`
on the (B, P, N, d) patch tensor (a 1x1 conv in ml-cvnets: the same computation and
parameters), so the Fisher features cover every weight except the norms'.

Input: NHWC with sides divisible by 32 and at least 64 px (every stage then has a side of at
least 2). A MobileViTv2 block whose input side is odd (the last one at 224 px: 7x7) first
resizes it bilinearly (corners aligned) up to the next multiple of the patch size, as ml-cvnets
does.
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


def make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
  """`v` rounded to the nearest multiple of `divisor` (at least `min_value`, default `divisor`),
  one multiple up if rounding lost more than 10% (MobileNet's channel rounding)."""
  min_value = divisor if min_value is None else min_value
  new = max(min_value, int(v + divisor / 2) // divisor * divisor)
  if new < 0.9 * v:
    new += divisor
  return new


def _batch_norm(train: bool, dtype: Any) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype)


def _layer_norm_2d(dtype: Any) -> nn.GroupNorm:
  # Explicit axes: the statistics of one example over (P, N, d) whatever leading axes there are.
  return nn.GroupNorm(num_groups=1, reduction_axes=(-3, -2, -1), epsilon=1e-5, dtype=dtype)


class InvertedResidual(nn.Module):
  """MobileNetV2's inverted residual ("MV2"): 1x1 conv to the hidden width -> BN -> act (only
  when `expand_ratio` != 1) -> 3x3 depthwise conv with the stride -> BN -> act -> 1x1 conv to
  `features` -> BN, plus the input when the stride is 1 and the width unchanged. The hidden width
  is make_divisible(round(C_in * expand_ratio), 8). Activation sites: 2 (1 without expansion).
  """

  features: int
  act: Activation
  strides: int = 1
  expand_ratio: float = 2.0
  dtype: Any = jnp.float32
  conv_implementation: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = functools.partial(Conv, use_bias=False, dtype=self.dtype, kernel_init=he_normal,
                             implementation=self.conv_implementation)
    channels = x.shape[-1]
    hidden = make_divisible(int(round(channels * self.expand_ratio)), 8)
    y = x
    if self.expand_ratio != 1:
      y = self.act(_batch_norm(train, self.dtype)(conv(hidden, (1, 1), padding=0)(y)))
    y = conv(hidden, (3, 3), strides=self.strides, padding=1, feature_group_count=hidden)(y)
    y = self.act(_batch_norm(train, self.dtype)(y))
    y = _batch_norm(train, self.dtype)(conv(self.features, (1, 1), padding=0)(y))
    if self.strides == 1 and channels == self.features:
      y = y + x
    return y


class LinearSelfAttention(nn.Module):
  """Separable linear self-attention over patches (B, P, N, d), linear in N.

  One dense layer d -> 1 + 2d gives a query score, keys and values for each patch; a softmax of
  the scores over the N patches weights the keys' sum into one context vector per pixel
  position P; the output is relu(values) * context, then a dense layer d -> d. No `act` site:
  the relu belongs to the attention (see the module docstring).
  """

  attn_dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    dim = x.shape[-1]
    qkv = nn.Dense(1 + 2 * dim, dtype=self.dtype, kernel_init=he_normal)(x)
    query, key, value = qkv[..., :1], qkv[..., 1:1 + dim], qkv[..., 1 + dim:]
    # Exponentials in float32: a bfloat16 softmax over hundreds of patches loses the small ones.
    scores = jax.nn.softmax(query.astype(jnp.float32), axis=-2).astype(self.dtype)
    scores = nn.Dropout(self.attn_dropout_rate, deterministic=not train)(scores)
    context = jnp.sum(key * scores, axis=-2, keepdims=True)
    out = jax.nn.relu(value) * context
    return nn.Dense(dim, dtype=self.dtype, kernel_init=he_normal)(out)


class LinearAttentionBlock(nn.Module):
  """Pre-norm transformer block on patches (B, P, N, d): x + attention(norm(x)), then
  x + dense d (dense `ffn_dim` -> act -> dense d)(norm(x)). One activation site."""

  ffn_dim: int
  act: Activation
  dropout_rate: float = 0.0
  attn_dropout_rate: float = 0.0
  ffn_dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    dropout = functools.partial(nn.Dropout, deterministic=not train)
    dense = functools.partial(nn.Dense, dtype=self.dtype, kernel_init=he_normal)
    y = _layer_norm_2d(self.dtype)(x)
    y = LinearSelfAttention(self.attn_dropout_rate, dtype=self.dtype)(y, train=train)
    x = x + dropout(self.dropout_rate)(y)
    y = _layer_norm_2d(self.dtype)(x)
    y = self.act(dense(self.ffn_dim)(y))
    y = dropout(self.ffn_dropout_rate)(y)
    y = dense(x.shape[-1])(y)
    return x + dropout(self.dropout_rate)(y)


def _align_corners_matrix(size_in: int, size_out: int) -> np.ndarray:
  """(size_out, size_in) weights of 1-D linear interpolation with aligned corners."""
  matrix = np.zeros((size_out, size_in), np.float32)
  if size_out == 1 or size_in == 1:
    matrix[:, 0] = 1.0
    return matrix
  position = np.arange(size_out) * (size_in - 1) / (size_out - 1)
  low = np.minimum(np.floor(position).astype(int), size_in - 2)
  frac = position - low
  rows = np.arange(size_out)
  matrix[rows, low] = 1.0 - frac
  matrix[rows, low + 1] = frac
  return matrix


def _resize_to_multiple(x: jax.Array, patch: Sequence[int]) -> jax.Array:
  """`x` (..., H, W, C) resized bilinearly (corners aligned, like ml-cvnets' F.interpolate) up
  to sides that are multiples of `patch`; unchanged when they already are."""
  height, width = x.shape[-3:-1]
  new_height = -(-height // patch[0]) * patch[0]
  new_width = -(-width // patch[1]) * patch[1]
  if (new_height, new_width) == (height, width):
    return x
  # Constant matrices rather than a gather: two small matmuls, nothing to differentiate.
  rows = jnp.asarray(_align_corners_matrix(height, new_height), x.dtype)
  cols = jnp.asarray(_align_corners_matrix(width, new_width), x.dtype)
  x = jnp.einsum("oh,...hwc->...owc", rows, x)
  return jnp.einsum("ow,...hwc->...hoc", cols, x)


def _unfold(x: jax.Array, patch: Sequence[int]) -> jax.Array:
  """(B, H, W, d) -> (B, P, N, d): P pixels in each patch, N patches."""
  batch, height, width, dim = x.shape
  ph, pw = patch
  x = x.reshape(batch, height // ph, ph, width // pw, pw, dim)
  x = x.transpose(0, 2, 4, 1, 3, 5)
  return x.reshape(batch, ph * pw, (height // ph) * (width // pw), dim)


def _fold(x: jax.Array, patch: Sequence[int], size: Sequence[int]) -> jax.Array:
  """The inverse of `_unfold`: (B, P, N, d) -> (B, H, W, d) for (H, W) = `size`."""
  batch, _, _, dim = x.shape
  ph, pw = patch
  height, width = size
  x = x.reshape(batch, ph, pw, height // ph, width // pw, dim)
  x = x.transpose(0, 3, 1, 4, 2, 5)
  return x.reshape(batch, height, width, dim)


class MobileViTv2Block(nn.Module):
  """The MobileViTv2 block: local representation (3x3 depthwise conv -> BN -> act, then a 1x1
  conv to `attn_dim` without norm or activation), unfold into patches (B, P, N, d),
  `num_attn_blocks` `LinearAttentionBlock`s, a final LayerNorm2D, fold back, 1x1 conv to
  `features` -> BN (no activation, no fusion with the block's input). The feed-forward width is
  int(ffn_multiplier * d // 16 * 16). Activation sites: 1 + num_attn_blocks.
  """

  features: int
  attn_dim: int
  num_attn_blocks: int
  act: Activation
  ffn_multiplier: float = 2.0
  patch_size: tuple[int, int] = (2, 2)
  dropout_rate: float = 0.0
  attn_dropout_rate: float = 0.0
  ffn_dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  conv_implementation: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = functools.partial(Conv, use_bias=False, dtype=self.dtype, kernel_init=he_normal,
                             implementation=self.conv_implementation)
    x = _resize_to_multiple(x, self.patch_size)
    channels = x.shape[-1]
    x = conv(channels, (3, 3), padding=1, feature_group_count=channels)(x)
    x = self.act(_batch_norm(train, self.dtype)(x))
    x = conv(self.attn_dim, (1, 1), padding=0)(x)
    size = x.shape[-3:-1]
    patches = _unfold(x, self.patch_size)
    ffn_dim = int(self.ffn_multiplier * self.attn_dim // 16 * 16)
    for _ in range(self.num_attn_blocks):
      patches = LinearAttentionBlock(
          ffn_dim, self.act, dropout_rate=self.dropout_rate,
          attn_dropout_rate=self.attn_dropout_rate, ffn_dropout_rate=self.ffn_dropout_rate,
          dtype=self.dtype)(patches, train=train)
    patches = _layer_norm_2d(self.dtype)(patches)
    x = _fold(patches, self.patch_size, size)
    return _batch_norm(train, self.dtype)(conv(self.features, (1, 1), padding=0)(x))


class MobileViTv2(nn.Module):
  """MobileViTv2 with width multiplier `width_multiplier`; see the module docstring.

  `attn_blocks` counts the linear-attention blocks of layers 3-5 ((2, 4, 3) in the paper;
  fewer make a quicker network of the same kinds of layers, e.g. for smoke tests).
  Batch norm momentum 0.9 (PyTorch's 0.1), epsilon 1e-5; convs without bias; the dense layers
  of the attention part with bias. The dropout rates (after attention and feed-forward outputs,
  on the attention scores, inside the feed-forward network, before the classifier) default to
  0, as in the ImageNet configurations of ml-cvnets.
  """

  act: Activation
  num_classes: int = 1000
  width_multiplier: float = 0.5
  attn_blocks: Sequence[int] = (2, 4, 3)  # attention blocks of layers 3, 4 and 5
  dropout_rate: float = 0.0
  attn_dropout_rate: float = 0.0
  ffn_dropout_rate: float = 0.0
  classifier_dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  conv_implementation: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    height, width = x.shape[-3:-1]
    if height % 32 or width % 32 or min(height, width) < 64:
      raise ValueError(f"MobileViTv2 needs input sides divisible by 32 and at least 64 px "
                       f"(five stride-2 stages, then 2x2 patches); got {height}x{width}.")
    w = self.width_multiplier
    mv2 = functools.partial(InvertedResidual, act=self.act, expand_ratio=2.0, dtype=self.dtype,
                            conv_implementation=self.conv_implementation)
    x = jnp.asarray(x, self.dtype)
    stem = make_divisible(float(np.clip(32 * w, 16, 64)), 8, min_value=16)
    x = Conv(stem, (3, 3), strides=2, padding=1, use_bias=False, dtype=self.dtype,
             kernel_init=he_normal, implementation=self.conv_implementation)(x)
    x = self.act(_batch_norm(train, self.dtype)(x))
    x = mv2(make_divisible(64 * w, 16))(x, train=train)
    for i in range(2):
      x = mv2(make_divisible(128 * w, 8), strides=2 if i == 0 else 1)(x, train=train)
    if len(self.attn_blocks) != 3:
      raise ValueError(f"attn_blocks needs one count per attention stage (3), got "
                       f"{tuple(self.attn_blocks)}")
    for attn_width, out_width, num_attn_blocks in zip((128, 192, 256), (256, 384, 512),
                                                      self.attn_blocks):
      features = make_divisible(out_width * w, 8)
      x = mv2(features, strides=2)(x, train=train)
      x = MobileViTv2Block(
          features, make_divisible(attn_width * w, 8), num_attn_blocks, self.act,
          dropout_rate=self.dropout_rate, attn_dropout_rate=self.attn_dropout_rate,
          ffn_dropout_rate=self.ffn_dropout_rate, dtype=self.dtype,
          conv_implementation=self.conv_implementation)(x, train=train)
    x = jnp.mean(x, axis=(-3, -2))
    x = nn.Dropout(self.classifier_dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=he_normal)(x)
    return x.astype(jnp.float32)


__all__ = ["InvertedResidual", "LinearAttentionBlock", "LinearSelfAttention", "MobileViTv2",
           "MobileViTv2Block", "make_divisible"]
