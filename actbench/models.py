"""The networks whose activation function actbench searches.

Every model takes its activation as the field `act` (any elementwise function of one array) and
applies it at every activation site; the model never inspects it, so in population training it
can be a closure over the integer codes of a candidate. Other common fields:

  num_classes          size of the output (logits, returned in float32 whatever `dtype` is).
  dtype                computation dtype (float32 by default; bfloat16 where a config asks).
                       Parameters stay float32.
  conv_implementation  'auto', 'xla' or 'im2col', see `actbench.layers.Conv`.

Call as `model.apply(variables, images, train=...)` with NHWC images; `train` switches dropout
(needs a 'dropout' rng) and batch norm (batch statistics, `mutable=['batch_stats']`).
Convolutions are `actbench.layers.Conv` (an `nn.Conv`), dense layers `nn.Dense`, so the Fisher
features find every weighted layer by intercepting those classes. Weighted layers are
initialized He normal: `jax.nn.initializers.he_normal()`, i.e. variance 2 / fan_in from a normal
truncated at two standard deviations (rescaled so the variance is exact), as Keras' he_normal;
biases start at zero.

`get_model(name, **fields)` builds one by name (see MODELS).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from actbench.layers import Conv

Activation = Callable[[jax.Array], jax.Array]

he_normal = nn.initializers.he_normal()


def _global_average_pool(x: jax.Array) -> jax.Array:
  return jnp.mean(x, axis=(-3, -2))


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
    return _global_average_pool(x).astype(jnp.float32)


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
    x = _global_average_pool(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=he_normal)(x)
    return x.astype(jnp.float32)


class ResNet20(ResNetCIFAR):
  """ResNet-20 (n = 3)."""

  depth: int = 20


class ResNet56(ResNetCIFAR):
  """ResNet-56 (n = 9), the Act-Bench-ResNet architecture."""

  depth: int = 56


MODELS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": SmallCNN,
    "allcnnc": AllCNNC,
    "resnet20": ResNet20,
    "resnet32": functools.partial(ResNetCIFAR, depth=32),
    "resnet44": functools.partial(ResNetCIFAR, depth=44),
    "resnet56": ResNet56,
    "resnet110": functools.partial(ResNetCIFAR, depth=110),
}


def get_model(name: str, **kwargs) -> nn.Module:
  """Builds the model registered as `name` with the given fields (e.g. act=..., num_classes=...)."""
  try:
    constructor = MODELS[name]
  except KeyError:
    raise ValueError(
        f"Unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}.") from None
  return constructor(**kwargs)


__all__ = ["AllCNNC", "BasicBlock", "MODELS", "ResNet20", "ResNet56", "ResNetCIFAR", "SmallCNN",
           "get_model"]
