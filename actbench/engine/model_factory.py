"""From a config (or your own `make_model`) to `act -> nn.Module`, the one shape every stage uses.

Factories are hashable by value (`ConfigModel`) or by the function you gave (`GivenModel`), so
equal configs share compiled programs. `check` runs a model abstractly on the dataset's input
shape before any work, so a wrong model fails with one message instead of a trace deep in a
compiled program, and `describe` gives its parameter shapes for the search store's fingerprint.

    make_model = from_config(config, num_classes=10)      # or from_config(..., make_model=f)
    check(make_model, input_shape=(8, 8, 1), num_classes=10)  # ModelError if it cannot serve
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from actbench import models
from actbench.models import ModelError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _dtype(name: str):
  if name not in DTYPES:
    raise ModelError(f"config.model.dtype must be one of {sorted(DTYPES)}, got {name!r}")
  return DTYPES[name]


def _tuples(value: Any) -> Any:
  """JSON lists back as tuples: model fields are static, hashable values."""
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return value


@dataclasses.dataclass(frozen=True)
class ConfigModel:
  """act -> the network config.model names, for `num_classes` classes."""

  name: str
  num_classes: int
  dtype: str = "float32"
  conv_implementation: str = "auto"
  kwargs_json: str = "{}"  # config.model.kwargs, further fields of the model

  def __call__(self, act: Callable) -> nn.Module:
    return models.build(models.resolve_model(self.name), act,
                        optional={"num_classes": self.num_classes, "dtype": _dtype(self.dtype),
                                  "conv_implementation": self.conv_implementation},
                        required=_tuples(json.loads(self.kwargs_json)))


@dataclasses.dataclass(frozen=True)
class GivenModel:
  """act -> your `make_model(act)`, made to accept `train=` (see models.build)."""

  make_model: Callable[[Callable], nn.Module]

  def __call__(self, act: Callable) -> nn.Module:
    return models.build(self.make_model, act)


def from_config(config, num_classes: int, make_model: Callable | None = None):
  """`act -> nn.Module`: your `make_model` if given, else config.model's network."""
  if make_model is not None:
    if isinstance(make_model, (ConfigModel, GivenModel)):
      return make_model
    if not callable(make_model):
      raise ModelError(f"make_model must be a function act -> flax Module, got {make_model!r}")
    return GivenModel(make_model)
  cfg = config.model
  _dtype(cfg.dtype)
  models.resolve_model(cfg.name)  # a bad name fails here, before any work
  return ConfigModel(cfg.name, int(num_classes), cfg.dtype, cfg.conv_implementation,
                     json.dumps(cfg.kwargs.to_dict(), sort_keys=True, default=repr))


def _abstract_init(make_model, input_shape: tuple[int, ...]):
  model = make_model(lambda x: x)
  key = jax.random.key(0)
  sample = jax.ShapeDtypeStruct((2,) + tuple(input_shape), jnp.float32)

  def init_and_apply(x):
    variables = model.init({"params": key, "dropout": key}, x, train=False)
    return variables, model.apply(variables, x, train=False)

  return jax.eval_shape(init_and_apply, sample)


def _name(make_model) -> str:
  inner = getattr(make_model, "make_model", None) or getattr(make_model, "name", None)
  return getattr(inner, "__qualname__", None) or str(inner or make_model)


@functools.lru_cache(maxsize=32)
def check(make_model, input_shape: tuple[int, ...], num_classes: int) -> None:
  """Raises ModelError unless the model maps a batch of `input_shape` inputs to
  (batch, num_classes) logits; nothing is computed (shapes only)."""
  try:
    _, logits = _abstract_init(make_model, input_shape)
  except ModelError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # the user's model: any error
    raise ModelError(f"model {_name(make_model)!r} fails on inputs of shape "
                     f"(batch, {', '.join(map(str, input_shape))}): {type(e).__name__}: "
                     f"{e}") from e
  shape = getattr(logits, "shape", None)
  if shape != (2, num_classes):
    raise ModelError(f"model {_name(make_model)!r} returns {shape if shape else type(logits)} "
                     f"for 2 inputs; the dataset has {num_classes} classes, so it must return "
                     f"logits of shape (2, {num_classes})")


def describe(make_model, input_shape: tuple[int, ...]) -> str:
  """A digest of the model's variable shapes and dtypes at this input shape: equal for the
  same architecture, different when layers or widths change."""
  variables, _ = _abstract_init(make_model, input_shape)
  leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
  text = json.dumps([(jax.tree_util.keystr(path), list(leaf.shape), str(leaf.dtype))
                     for path, leaf in leaves])
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def identity(make_model, input_shape: tuple[int, ...]) -> str:
  """What the model is, for checkpoint names and the search store: a config's model by its
  fields, your own by its name and variable shapes."""
  if isinstance(make_model, ConfigModel):
    return repr(make_model)
  return f"{_name(make_model)}:{describe(make_model, input_shape)}"
