"""The CIFAR ResNets of He et al. 2016 (depth 6n+2; ResNet-56 is Act-Bench-ResNet's network)."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from actbench.models.layers import Activation, Conv, global_average_pool, he_normal


def _zero_pad_shortcut(x: jax.Array, features: int, stride: int) -> jax.Array:
  """He et al.'s option A shortcut: subsample by `stride`, append zero channels."""
  if stride != 1:
    x = x[..., ::stride, ::stride, :]
  extra = features - x.shape[-1]
  if extra:
    x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, extra)])
  return x


class BasicBlock(nn.Module):
  """conv3x3-BN-act-conv3x3-BN, plus the option A shortcut, then act (2 activation sites)."""

  features: int
  act: Activation
  strides: int = 1
  dtype: Any = jnp.float32
  conv_implementation: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = functools.partial(Conv, self.features, (3, 3), padding=1, use_bias=False,
                             dtype=self.dtype, kernel_init=he_normal,
                             implementation=self.conv_implementation)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype)
    y = self.act(norm()(conv(strides=self.strides)(x)))
    y = norm()(conv()(y))
    return self.act(y + _zero_pad_shortcut(x, self.features, self.strides))


class ResNetCIFAR(nn.Module):
  """The CIFAR ResNets of He et al. 2016 ("Deep Residual Learning", section 4.2), depth 6n+2.

  3x3 conv 16 -> BN -> act -> 3 stages of n basic blocks with 16, 32, 64 filters (stride 2 at
  the first block of stages 2 and 3) -> global average pool -> dense num_classes. Shortcuts are
  option A (identity; stride-2 subsampling and zero-padded channels where the shape changes; no
  parameters). 3x3 convs pad one pixel each side and have no bias; batch norm momentum 0.9,
  epsilon 1e-5. Activation sites: 1 + 2 * 3n (55 for ResNet-56, 853,018 parameters with 10
  classes).
  """

  act: Activation
  num_classes: int = 10
  depth: int = 56
  dtype: Any = jnp.float32
  conv_implementation: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.depth < 8 or (self.depth - 2) % 6:
      raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {self.depth}.")
    blocks_per_stage = (self.depth - 2) // 6
    x = jnp.asarray(x, self.dtype)
    x = Conv(16, (3, 3), padding=1, use_bias=False, dtype=self.dtype, kernel_init=he_normal,
             implementation=self.conv_implementation)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype)(x)
    x = self.act(x)
    for stage, features in enumerate((16, 32, 64)):
      for block in range(blocks_per_stage):
        strides = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(features, self.act, strides=strides, dtype=self.dtype,
                       conv_implementation=self.conv_implementation)(x, train=train)
    x = global_average_pool(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=he_normal)(x)
    return x.astype(jnp.float32)


class ResNet20(ResNetCIFAR):
  """ResNet-20 (n = 3)."""

  depth: int = 20


class ResNet56(ResNetCIFAR):
  """ResNet-56 (n = 9), the Act-Bench-ResNet architecture."""

  depth: int = 56


__all__ = ["BasicBlock", "ResNet20", "ResNet56", "ResNetCIFAR"]
