"""The fields a config may have: those of configs/common.py, where each is documented.

A ConfigDict accepts any new attribute, so `config.train.learnig_rate = 10.0` in a config file
would run silently with the default rate. The launcher checks every config (and every
`--config.X=...` override) against `common.base_config()` before any work, and names the
field and the closest known one; then the values that name things (a strategy, an optimizer,
a dataset, a model, activations and the search space), so that a misspelt one fails at once
rather than after minutes of features or training.

    check(config)                         # ConfigError: config.train.learnig_rate: ...
"""

from __future__ import annotations

import difflib

import ml_collections

# Sections whose fields are the user's own (a model's constructor arguments).
FREE_FORM = ("model.kwargs",)


class ConfigError(ValueError):
  """A config names a field that does not exist, or a value of the wrong kind."""


def reference() -> ml_collections.ConfigDict:
  """Every field and its default (configs/common.py)."""
  from configs import common  # pylint: disable=import-outside-toplevel  # the configs package
  return common.base_config()


def _unknown(config, known, path: str) -> list[str]:
  problems = []
  for key in config.keys():
    dotted = f"{path}.{key}" if path else key
    if any(dotted == free or dotted.startswith(free + ".") for free in FREE_FORM):
      continue
    if key not in known:
      close = difflib.get_close_matches(key, list(known.keys()), n=1, cutoff=0.6)
      hint = f"did you mean {close[0]!r}? " if close else ""
      problems.append(f"config.{dotted} is not a field ({hint}the fields of "
                      f"config{'.' + path if path else ''} are listed in configs/common.py)")
      continue
    value, expected = config[key], known[key]
    if isinstance(expected, ml_collections.ConfigDict):
      if not isinstance(value, ml_collections.ConfigDict):
        problems.append(f"config.{dotted} must be a section (a ConfigDict), got {value!r}")
      else:
        problems.extend(_unknown(value, expected, dotted))
    elif isinstance(value, ml_collections.ConfigDict):
      problems.append(f"config.{dotted} must be a value like {expected!r}, got a section")
  return problems


def _choices() -> dict[str, tuple]:
  """Fields that name one of a few things: dotted path -> the allowed values."""
  # pylint: disable=import-outside-toplevel  # the stages' own lists; the launcher sits above
  from actbench.engine import model_factory, objectives, optim, population, train
  from actbench.fisher import device_eigenvalues, experiment, kfac, spectrum
  from actbench.models import layers
  from actbench.search import strategies, surrogate
  return {
      "population.strategy": population.STRATEGIES, "fisher.method": experiment.METHODS,
      "fisher.type": kfac.FISHER_TYPES, "fisher.floor_mode": spectrum.FLOOR_MODES,
      "fisher.eigenvalues": device_eigenvalues.MODES,
      "search.strategy": tuple(strategies.STRATEGIES),
      "surrogate.features": surrogate.FEATURE_SETS, "train.optimizer": optim.OPTIMIZERS,
      "train.schedule": optim.SCHEDULES, "train.loss": objectives.LOSSES,
      "train.weight_decay_on": ("all", "kernels"), "train.divergence": train.DIVERGENCE_RULES,
      "model.dtype": tuple(model_factory.DTYPES),
      "model.conv_implementation": layers.IMPLEMENTATIONS,
      "replay.strategies": tuple(strategies.STRATEGIES),
      "replay.quality_features": surrogate.FEATURE_SETS,
  }


def _get(config, dotted: str):
  for key in dotted.split("."):
    if not hasattr(config, "get") or key not in config:
      return None
    config = config[key]
  return config


def _bad_values(config) -> list[str]:
  """What is wrong with the values that name things, one line each."""
  # pylint: disable=import-outside-toplevel
  from actbench import models
  from actbench.engine import data
  from actbench.expr import expression, space
  found = []
  for dotted, allowed in _choices().items():
    value = _get(config, dotted)
    values = value if isinstance(value, (tuple, list)) else [value]
    for item in values:
      if value is not None and item not in allowed:
        close = difflib.get_close_matches(str(item), [str(a) for a in allowed], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        found.append(f"config.{dotted} = {item!r} is not one of {allowed}{hint}")
  name = _get(config, "dataset.name")
  if name is not None:
    try:
      data.check_name(name)
    except ValueError as e:
      found.append(f"config.dataset.name: {e}")
  model = _get(config, "model.name")
  if model is not None:
    try:
      models.resolve_model(model)
    except models.ModelError as e:
      found.append(f"config.model.name: {e}")
  for dotted, parse in (("activations", expression.parse), ("search.baselines", expression.parse),
                        ("search.space", expression.parse_schema)):
    value = _get(config, dotted)
    for item in (value if isinstance(value, (tuple, list)) else [value] if value else []):
      try:
        parse(item)
      except ValueError as e:
        found.append(f"config.{dotted}: {e}")
  for kind in ("unary", "binary", "nary"):
    chosen = _get(config, f"search.{kind}")
    if chosen:
      try:
        space.size(str(_get(config, "search.space")), **{kind: list(chosen)})
      except ValueError as e:
        found.append(f"config.search.{kind}: {e}")
  return found


def problems(config) -> list[str]:
  """What is wrong with `config`'s field names, and then its values that name things, one line
  each ([] when nothing)."""
  return _unknown(config, reference(), "") or _bad_values(config)


def check(config) -> None:
  """Raises ConfigError naming every unknown field of `config` (and the closest known one),
  or every value that names nothing known."""
  found = problems(config)
  if found:
    raise ConfigError("\n".join(found))


def check_override(dotted: str) -> None:
  """Raises ConfigError when a command-line override `--config.<dotted>` names no field."""
  known = reference()
  parts = dotted.split(".")
  for depth, key in enumerate(parts):
    path = ".".join(parts[:depth])
    if any(path == free or path.startswith(free + ".") for free in FREE_FORM):
      return
    if not isinstance(known, ml_collections.ConfigDict):
      raise ConfigError(f"--config.{dotted}: config.{path} is a value, not a section")
    if key not in known:
      close = difflib.get_close_matches(key, list(known.keys()), n=1, cutoff=0.6)
      hint = f" (did you mean --config.{'.'.join(parts[:depth] + [close[0]])}?)" if close else ""
      raise ConfigError(f"--config.{dotted}: config{'.' + path if path else ''} has no field "
                        f"{key!r}{hint}")
    known = known[key]
