"""The ImageNet ResNets of He et al. 2016 (ResNet-18 to -152), torchvision's "v1.5" layout."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from actbench.models.layers import Activation, Conv, global_average_pool, he_normal


class ImageNetBlock(nn.Module):
  """One residual block of the ImageNet ResNets (He et al. 2016), torchvision's "v1.5" layout.

  Bottleneck (`bottleneck=True`): 1x1 conv `features` -> BN -> act -> 3x3 conv `features` with
  the block's stride -> BN -> act -> 1x1 conv 4 * `features` -> BN. Basic: 3x3 conv with the
  stride -> BN -> act -> 3x3 conv -> BN. The shortcut is the identity, or a 1x1 conv with the
  stride + BN (option B) where the shape changes; the sum goes through the activation. So 3
  activation sites per bottleneck block, 2 per basic block.

  The paper strides the first 1x1 conv, which then skips three quarters of its inputs; "v1.5"
  strides the 3x3 conv instead (more accurate, somewhat more computation).
  `zero_init_last_bn` starts the scale of the last norm of the residual branch at zero (Goyal
  et al. 2017, "Accurate, Large Minibatch SGD"), so every block starts as its shortcut; the
  shortcut's norm starts at one. It is off by default (as in torchvision and Keras): at
  initialization it zeroes the gradients inside every residual branch, so the Fisher features
  of those layers, taken at initialization, would all vanish.
  """

  features: int
  act: Activation
  strides: int = 1
  bottleneck: bool = True
  zero_init_last_bn: bool = False
  dtype: Any = jnp.float32
  conv_implementation: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = functools.partial(Conv, use_bias=False, dtype=self.dtype, kernel_init=he_normal,
                             implementation=self.conv_implementation)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype)
    last_scale = nn.initializers.zeros if self.zero_init_last_bn else nn.initializers.ones
    if self.bottleneck:
      out_features = 4 * self.features
      y = self.act(norm()(conv(self.features, (1, 1), padding=0)(x)))
      y = self.act(norm()(conv(self.features, (3, 3), strides=self.strides, padding=1)(y)))
      y = norm(scale_init=last_scale)(conv(out_features, (1, 1), padding=0)(y))
    else:
      out_features = self.features
      y = self.act(norm()(conv(self.features, (3, 3), strides=self.strides, padding=1)(x)))
      y = norm(scale_init=last_scale)(conv(self.features, (3, 3), padding=1)(y))
    shortcut = x
    if self.strides != 1 or x.shape[-1] != out_features:
      shortcut = norm()(conv(out_features, (1, 1), strides=self.strides, padding=0)(x))
    return self.act(y + shortcut)


class ResNetImageNet(nn.Module):
  """The ImageNet ResNets of He et al. 2016 ("Deep Residual Learning", table 1), torchvision's
  "v1.5" layout (stride on the 3x3 conv of the bottleneck, see `ImageNetBlock`).

  7x7 conv 64 stride 2 -> BN -> act -> 3x3 max pool stride 2 -> 4 stages of `stage_sizes`
  blocks of widths `width` * (1, 2, 4, 8) (stride 2 at the first block of stages 2-4;
  bottleneck blocks output 4x their width) -> global average pool -> dense num_classes.
  Convs have no bias and pad like torchvision (3 for 7x7, 1 for 3x3, none for 1x1); batch norm
  momentum 0.9, epsilon 1e-5. Activation sites: the stem's, then 3 per bottleneck block or 2
  per basic block: 49 for ResNet-50 (25,557,032 parameters with 1000 classes, as torchvision's),
  17 for ResNet-18. The input size is free: 224 px gives a 7x7 last stage, 64 px a 2x2 one.
  """

  act: Activation
  num_classes: int = 1000
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  bottleneck: bool = True
  zero_init_last_bn: bool = False
  dtype: Any = jnp.float32
  conv_implementation: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = jnp.asarray(x, self.dtype)
    x = Conv(self.width, (7, 7), strides=2, padding=3, use_bias=False, dtype=self.dtype,
             kernel_init=he_normal, implementation=self.conv_implementation)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype)(x)
    x = self.act(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        x = ImageNetBlock(self.width * 2**stage, self.act,
                          strides=2 if stage > 0 and block == 0 else 1,
                          bottleneck=self.bottleneck, zero_init_last_bn=self.zero_init_last_bn,
                          dtype=self.dtype, conv_implementation=self.conv_implementation)(
                              x, train=train)
    x = global_average_pool(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=he_normal)(x)
    return x.astype(jnp.float32)


__all__ = ["ImageNetBlock", "ResNetImageNet"]
