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

`get_model(name, **fields)` builds one by name (see MODELS). MobileViTv2 lives in
`actbench.mobilevit`, CoAtNet in `actbench.coatnet`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from actbench.layers import Conv
from actbench.coatnet import CoAtNet, CoAtNet0
from actbench.mobilevit import MobileViTv2

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
    x = _global_average_pool(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=he_normal)(x)
    return x.astype(jnp.float32)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": SmallCNN,
    "allcnnc": AllCNNC,
    "resnet20": ResNet20,
    "resnet32": functools.partial(ResNetCIFAR, depth=32),
    "resnet44": functools.partial(ResNetCIFAR, depth=44),
    "resnet56": ResNet56,
    "resnet110": functools.partial(ResNetCIFAR, depth=110),
    "resnet18": functools.partial(ResNetImageNet, stage_sizes=(2, 2, 2, 2), bottleneck=False),
    "resnet34": functools.partial(ResNetImageNet, stage_sizes=(3, 4, 6, 3), bottleneck=False),
    "resnet50": functools.partial(ResNetImageNet, stage_sizes=(3, 4, 6, 3)),
    "resnet101": functools.partial(ResNetImageNet, stage_sizes=(3, 4, 23, 3)),
    "resnet152": functools.partial(ResNetImageNet, stage_sizes=(3, 8, 36, 3)),
    "mobilevit_v2": MobileViTv2,
    "mobilevit_v2_050": functools.partial(MobileViTv2, width_multiplier=0.5),
    "mobilevit_v2_075": functools.partial(MobileViTv2, width_multiplier=0.75),
    "mobilevit_v2_100": functools.partial(MobileViTv2, width_multiplier=1.0),
    "coatnet": CoAtNet,
    "coatnet0": CoAtNet0,
}


def get_model(name: str, **kwargs) -> nn.Module:
  """Builds the model registered as `name` with the given fields (e.g. act=..., num_classes=...)."""
  try:
    constructor = MODELS[name]
  except KeyError:
    raise ValueError(
        f"Unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}.") from None
  return constructor(**kwargs)


__all__ = ["AllCNNC", "BasicBlock", "CoAtNet", "CoAtNet0", "ImageNetBlock", "MODELS",
           "MobileViTv2", "ResNet20", "ResNet56", "ResNetCIFAR", "ResNetImageNet", "SmallCNN",
           "get_model"]
