"""Models by name: the built-in registry, models registered at run time, import paths; and
building one from an activation and the fields its constructor takes.

    register_model("my_mlp", MyMLP)                 # then config.model.name = "my_mlp"
    factory = resolve_model("my_package.models:MyMLP")
    model = build(factory, act, optional={"num_classes": 10}, required={"hidden": 64})
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn

from actbench import errors
from actbench.models.cnn import AllCNNC, SmallCNN
from actbench.models.coatnet import CoAtNet, CoAtNet0
from actbench.models.mobilevit import MobileViTv2
from actbench.models.resnet_cifar import ResNet56, ResNet20, ResNetCIFAR
from actbench.models.resnet_imagenet import ResNetImageNet


class ModelError(errors.InputError, ValueError):
  """A model name, import path or field that cannot give a model."""


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


def register_model(name: str, factory: Callable[..., nn.Module], *, overwrite: bool = False):
  """Makes `factory` (act, **fields) -> nn.Module available as config.model.name = `name`."""
  if not isinstance(name, str) or not name or ":" in name:
    raise ModelError(f"a model name must be a non-empty string without ':', got {name!r}")
  if not callable(factory):
    raise ModelError(f"model {name!r}: the factory must be callable, got {factory!r}")
  if name in MODELS and not overwrite and MODELS[name] is not factory:
    raise ModelError(f"model {name!r} is already registered; pass overwrite=True to replace it")
  MODELS[name] = factory


def resolve_model(name: str) -> Callable[..., nn.Module]:
  """The factory of a registered name, or of an import path 'package.module:Attribute'."""
  if not isinstance(name, str):
    raise ModelError(f"config.model.name must be a string, got {name!r}")
  if name in MODELS:
    return MODELS[name]
  if ":" not in name:
    close = difflib.get_close_matches(name, MODELS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ModelError(f"unknown model {name!r}{hint}; known: {', '.join(sorted(MODELS))}, or an "
                     "import path 'package.module:Factory'")
  module_name, _, attribute = name.partition(":")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ModelError(f"model {name!r}: cannot import module {module_name!r} ({e}); is it on "
                     "the Python path (the working directory, PYTHONPATH, an installed "
                     "package)?") from e
  except Exception as e:  # pylint: disable=broad-except  # the user's module: any error
    raise ModelError(f"model {name!r}: importing module {module_name!r} failed: "
                     f"{_where(e)}{type(e).__name__}: {e}") from e
  factory = module
  for part in attribute.split("."):
    factory = getattr(factory, part, None)
    if factory is None:
      raise ModelError(f"model {name!r}: module {module_name!r} has no {attribute!r}")
  if not callable(factory):
    raise ModelError(f"model {name!r}: {attribute!r} is not callable")
  return factory


def _where(error: Exception) -> str:
  """'FILE, line N: ' of the innermost frame of `error`'s traceback (the user's code)."""
  if isinstance(error, SyntaxError):  # its message names the file and line
    return ""
  frames = traceback.extract_tb(error.__traceback__)
  return f"{frames[-1].filename}, line {frames[-1].lineno}: " if frames else ""


def _parameters(factory) -> tuple[set[str], bool]:
  """The keyword arguments `factory` takes, and whether it takes any (**kwargs)."""
  try:
    parameters = inspect.signature(factory).parameters.values()
  except (TypeError, ValueError):  # no signature (a builtin): assume it takes anything
    return set(), True
  names = {p.name for p in parameters
           if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
  return names, any(p.kind == p.VAR_KEYWORD for p in parameters)


def takes_train(module: nn.Module) -> bool:
  """Whether the module's __call__ takes a `train` argument."""
  names, anything = _parameters(type(module).__call__)
  return anything or "train" in names


class _WithTrain(nn.Module):
  """A model whose __call__ has no `train` argument, given one (ignored): the trainer and the
  Fisher features pass it to every model."""

  inner: nn.Module

  def __call__(self, x, train: bool = False):
    del train
    return self.inner(x)


def build(factory: Callable[..., nn.Module], act: Callable, *,
          optional: Mapping[str, Any] = (), required: Mapping[str, Any] = ()) -> nn.Module:
  """factory(act, **fields): the `optional` fields only where the factory takes them, the
  `required` ones always (a ModelError names any it does not take). The result always
  accepts `train=`.
  """
  names, anything = _parameters(factory)
  unknown = [key for key in dict(required) if not anything and key not in names]
  if unknown:
    raise ModelError(f"model {getattr(factory, '__name__', factory)!r} takes no field "
                     f"{', '.join(map(repr, unknown))} (config.model.kwargs); it takes "
                     f"{', '.join(sorted(names)) or 'only the activation'}")
  fields = {key: value for key, value in dict(optional).items() if anything or key in names}
  fields.update(required)
  model = factory(act, **fields)
  if not isinstance(model, nn.Module):
    raise ModelError(f"model factory {getattr(factory, '__name__', factory)!r} returned "
                     f"{type(model).__name__}, not a flax.linen.Module")
  return model if takes_train(model) else _WithTrain(model)


def get_model(name: str, **fields) -> nn.Module:
  """Builds the model registered as `name` (or at an import path) with the given fields
  (e.g. act=..., num_classes=...), all passed as they are."""
  return resolve_model(name)(**fields)
