"""The networks whose activation function actbench searches.

Every model takes its activation as the field `act` (any elementwise function of one array) and
applies it at every activation site; the model never inspects it, so in population training it
can be a closure over the integer codes of a candidate. Other common fields:

  num_classes          size of the output (logits, returned in float32 whatever `dtype` is).
  dtype                computation dtype (float32 by default; bfloat16 where a config asks).
                       Parameters stay float32.
  conv_implementation  'auto', 'xla' or 'im2col', see `layers.Conv`.

Call as `model.apply(variables, images, train=...)` with NHWC images; `train` switches dropout
(needs a 'dropout' rng) and batch norm (batch statistics, `mutable=['batch_stats']`).
Convolutions are `layers.Conv` (an `nn.Conv`), dense layers `nn.Dense`, so the Fisher
features find every weighted layer by intercepting those classes. Weighted layers are
initialized He normal: `jax.nn.initializers.he_normal()`, i.e. variance 2 / fan_in from a normal
truncated at two standard deviations (rescaled so the variance is exact), as Keras' he_normal;
biases start at zero.

`get_model(name, **fields)` builds one by name (see MODELS). One module per family:

  cnn.py              SmallCNN (the digits examples), All-CNN-C (Act-Bench-CNN)
  resnet_cifar.py     the CIFAR ResNets (ResNet-56: Act-Bench-ResNet)
  resnet_imagenet.py  ResNet-18 to -152
  mobilevit.py        MobileViTv2 (Act-Bench-ViT)
  coatnet.py          CoAtNet
  layers.py           the im2col convolution `Conv` and what the families share
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn

from actbench.models.cnn import AllCNNC, SmallCNN
from actbench.models.coatnet import CoAtNet, CoAtNet0
from actbench.models.mobilevit import MobileViTv2
from actbench.models.resnet_cifar import BasicBlock, ResNet20, ResNet56, ResNetCIFAR
from actbench.models.resnet_imagenet import ImageNetBlock, ResNetImageNet

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
