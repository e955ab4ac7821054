"""The plain convolutional networks: the small CNN of the digits examples and All-CNN-C
(Act-Bench-CNN). The fields every model shares are in the package docstring (`actbench.models`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from actbench.models.layers import Activation, Conv, global_average_pool, he_normal


class SmallCNN(nn.Module):
  """The small default network, sized for scikit-learn digits (8x8x1 images, 10 classes).

  conv 3x3 `features[0]` -> act -> conv 3x3 stride 2 for each further width -> act
  -> flatten -> dense `hidden` -> act -> dense num_classes. With the defaults: 8x8x16, 4x4x32,
  64 hidden units, 3 activation sites, 38,282 parameters. No dropout or batch norm; `train` is
  accepted for the common interface and ignored.
  """

  act: Activation
  num_classes: int = 10
  features: Sequence[int] = (16, 32)
  hidden: int = 64
  dtype: Any = jnp.float32
  conv_implementation: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    x = jnp.asarray(x, self.dtype)
    for i, width in enumerate(self.features):
      x = Conv(width, (3, 3), strides=1 if i == 0 else 2, padding=1, dtype=self.dtype,
               kernel_init=he_normal, implementation=self.conv_implementation)(x)
      x = self.act(x)
    x = x.reshape(x.shape[:-3] + (-1,))
    x = self.act(nn.Dense(self.hidden, dtype=self.dtype, kernel_init=he_normal)(x))
    x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=he_normal)(x)
    return x.astype(jnp.float32)


class AllCNNC(nn.Module):
  """All-CNN-C (Springenberg et al. 2015, "Striving for Simplicity: The All Convolutional Net").

  dropout 0.2 -> 3x3 conv 96 -> 3x3 conv 96 -> 3x3 conv 96 stride 2 -> dropout 0.5
  -> 3x3 conv 192 -> 3x3 conv 192 -> 3x3 conv 192 stride 2 -> dropout 0.5
  -> 3x3 conv 192 VALID -> 1x1 conv 192 -> 1x1 conv num_classes -> global average pool.
  The activation follows every conv except the last (8 sites), whose output is averaged into the
  logits. 3x3 convs pad by one pixel each side (the paper's Caffe setting; same output sizes as
  'SAME'): 32x32 -> 16x16 -> 8x8 -> 6x6. 1,369,738 parameters for CIFAR-10.

  The paper has no batch norm. With `use_batch_norm` a BatchNorm (momentum 0.9, epsilon 1e-5)
  follows each conv but the last, before the activation, and those convs lose their bias
  (the norm's offset replaces it); the final conv is never normalized since it makes the logits.
  """

  act: Activation
  num_classes: int = 10
  use_batch_norm: bool = False
  input_dropout_rate: float = 0.2
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  conv_implementation: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = jnp.asarray(x, self.dtype)
    x = nn.Dropout(self.input_dropout_rate, deterministic=not train)(x)
    # (features, kernel, stride, padding) of the hidden convs.
    hidden = [(96, 3, 1, 1), (96, 3, 1, 1), (96, 3, 2, 1),
              (192, 3, 1, 1), (192, 3, 1, 1), (192, 3, 2, 1),
              (192, 3, 1, "VALID"), (192, 1, 1, "VALID")]
    for features, kernel, stride, padding in hidden:
      x = Conv(features, (kernel, kernel), strides=stride, padding=padding,
               use_bias=not self.use_batch_norm, dtype=self.dtype, kernel_init=he_normal,
               implementation=self.conv_implementation)(x)
      if self.use_batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype)(x)
      x = self.act(x)
      if stride == 2:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = Conv(self.num_classes, (1, 1), padding="VALID", dtype=self.dtype, kernel_init=he_normal,
             implementation=self.conv_implementation)(x)
    return global_average_pool(x).astype(jnp.float32)


__all__ = ["AllCNNC", "SmallCNN"]
