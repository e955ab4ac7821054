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

Your own model is anything that maps an activation function to a Flax module,
`make_model(act) -> nn.Module` (a module class with an `act` field first, or any function):
give it by import path (`config.model.name = "my_package.my_module:MyModel"`), register it
(`register_model("my_model", MyModel)`), or pass `make_model=` to train, features and search.
The common fields are passed only when it takes them; a `train` argument is optional.

`get_model(name, **fields)` builds one by name (see MODELS). One module per family:

  cnn.py              SmallCNN (the digits examples), All-CNN-C (Act-Bench-CNN)
  resnet_cifar.py     the CIFAR ResNets (ResNet-56: Act-Bench-ResNet)
  resnet_imagenet.py  ResNet-18 to -152
  mobilevit.py        MobileViTv2 (Act-Bench-ViT)
  coatnet.py          CoAtNet
  layers.py           the im2col convolution `Conv` and what the families share
  registry.py         names and import paths to models, and building one from its fields
"""

from actbench.models.cnn import AllCNNC, SmallCNN
from actbench.models.coatnet import CoAtNet, CoAtNet0
from actbench.models.mobilevit import MobileViTv2
from actbench.models.registry import (MODELS, ModelError, build, get_model, register_model,
                                      resolve_model, takes_train)
from actbench.models.resnet_cifar import BasicBlock, ResNet20, ResNet56, ResNetCIFAR
from actbench.models.resnet_imagenet import ImageNetBlock, ResNetImageNet

__all__ = ["AllCNNC", "BasicBlock", "CoAtNet", "CoAtNet0", "ImageNetBlock", "MODELS",
           "MobileViTv2", "ModelError", "ResNet20", "ResNet56", "ResNetCIFAR", "ResNetImageNet",
           "SmallCNN", "build", "get_model", "register_model", "resolve_model", "takes_train"]
