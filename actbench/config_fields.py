"""The fields a config may have: those of configs/common.py, where each is documented.

A ConfigDict accepts any new attribute, so `config.train.learnig_rate = 10.0` in a config file
would run silently with the default rate. The launcher checks every config (and every
`--config.X=...` override) against `common.base_config()` before any work, and names the
field and the closest known one; then the values that name things (a strategy, an optimizer,
a dataset, a model, activations and the search space), so that a misspelt one fails at once
rather than after minutes of features or training.

    config = checked(config)      # complete, or ConfigError: config.train.learnig_rate: ...
"""

from __future__ import annotations

import difflib

import ml_collections

from actbench import defaults
from actbench.defaults import reference
from actbench.errors import ConfigError

# What `python -m actbench.main` can do (actbench/modes.py runs each).
MODES = ("train", "features", "search", "benchmark", "replay", "report", "recover")


def _choices() -> dict[str, tuple]:
  """Fields that name one of a few things: dotted path -> the allowed values."""
  # pylint: disable=import-outside-toplevel  # the stages' own lists; the launcher sits above
  from actbench.engine import model_factory, objectives, optim, population, train
  from actbench.fisher import device_eigenvalues, experiment, kfac, spectrum
  from actbench.models import layers
  from actbench.search import featurize, strategies, surrogate
  return {
      "mode": MODES, "population.strategy": population.STRATEGIES,
      "fisher.method": experiment.METHODS,
      "fisher.type": kfac.FISHER_TYPES, "fisher.floor_mode": spectrum.FLOOR_MODES,
      "fisher.eigenvalues": device_eigenvalues.MODES,
      "search.strategy": tuple(strategies.STRATEGIES), "search.fisher_choice": featurize.CHOICES,
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
    config = config[key]
  return config


def _bad_values(config) -> list[str]:
  """What is wrong with the values of a complete config that name things, one line each."""
  # pylint: disable=import-outside-toplevel
  from actbench import models
  from actbench.engine import data
  from actbench.expr import expression, space
  found = []
  for dotted, allowed in _choices().items():
    value = _get(config, dotted)
    for item in value if isinstance(value, (tuple, list)) else [value]:
      if item not in allowed:
        close = difflib.get_close_matches(str(item), [str(a) for a in allowed], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        found.append(f"config.{dotted} = {item!r} is not one of {allowed}{hint}")
  try:
    data.check_name(config.dataset.name)
  except ValueError as e:
    found.append(f"config.dataset.name: {e}")
  try:
    models.resolve_model(config.model.name)
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
  found += _store_problems(config.search)
  found += _budget_problems(config)
  if float(config.report.watch_s) < 0:
    found.append(f"config.report.watch_s = {config.report.watch_s!r}: must be 0 (write "
                 "report.html once) or a number of seconds between rewrites")
  space_is_bad = any(line.startswith("config.search.space:") for line in found)
  for kind in ("unary", "binary", "nary"):
    chosen = config.search[kind]
    if chosen and not space_is_bad:  # else the space's own error says it all
      try:
        space.size(str(config.search.space), **{kind: list(chosen)})
      except ValueError as e:
        found.append(f"config.search.{kind}: {e}")
  return found


def _budget_problems(config) -> list[str]:
  """What is wrong with config.search's Fisher budget (featurize.py)."""
  found = [f"config.search.{name} = {config.search[name]!r}: must be 0 or more"
           for name in ("fisher_budget", "fisher_round", "fisher_every")
           if int(config.search[name]) < 0]
  if int(config.search.fisher_budget) and config.mode == "benchmark":
    found.append(f"config.search.fisher_budget = {config.search.fisher_budget}: a benchmark "
                 "table holds every function's Fisher features; set it to 0 for mode "
                 "benchmark")
  return found + _fidelity_problems(config)


def _fidelity_problems(config) -> list[str]:
  """What is wrong with config.search.fidelity (successive halving, engine/halving.py)."""
  from actbench.engine import halving  # pylint: disable=import-outside-toplevel
  if not config.search.fidelity.rungs:
    return []
  try:
    if config.mode not in ("search", "benchmark"):  # a replay: the table's curves decide
      halving.Fidelity(tuple(config.search.fidelity.rungs), int(config.search.fidelity.eta))
      return []
    fidelity = halving.Fidelity.from_config(config)
  except ConfigError as e:
    return [str(e).replace("successive halving's ", "config.search.fidelity.")]
  if fidelity is not None and config.mode == "benchmark":
    return ["config.search.fidelity.rungs is set: a benchmark table holds every function "
            "trained in full; set it to () for mode benchmark"]
  return []


def _store_problems(search) -> list[str]:
  """What is wrong with where the search's store is (config.search.store, .name)."""
  from actbench.search import postgres_store  # pylint: disable=import-outside-toplevel
  location = str(search.store)
  if postgres_store.is_database(location):
    if not search.name:
      return ["config.search.name is empty: a postgresql:// store holds many searches; name "
              "this one (every worker of the search gives the same name)"]
    if not postgres_store.NAME_PATTERN.fullmatch(str(search.name)):
      return [f"config.search.name = {search.name!r}: use 1 to 54 letters, digits, '_', '.' "
              "or '-', starting with a letter or digit"]
  elif "://" in location:
    return [f"config.search.store = {location!r}: a store is '' (search.sqlite in the "
            "workdir), a file path, or a postgresql://user@host:port/database URL"]
  return []


def problems(config) -> list[str]:
  """What is wrong with `config`'s field names, and then with its values that name things,
  one line each ([] when nothing)."""
  return _completed(config)[0]


def checked(config) -> ml_collections.ConfigDict:
  """`config` completed with every default (`defaults.complete`), after checking its field
  names and the values that name things.

  Raises:
    ConfigError: naming every unknown field of `config` (and the closest known one), or every
      value that names nothing known.
  """
  found, full = _completed(config)
  if found:
    raise ConfigError("\n".join(found))
  return normalized(full)


def normalized(config) -> ml_collections.ConfigDict:
  """`config` with the names in config.activations and config.search.baselines in their
  normal spelling (`add(relu(x), tanh(x))` is `add(relu(x),tanh(x))`): the names results are
  trained, recorded and looked up under."""
  from actbench.expr import expression  # pylint: disable=import-outside-toplevel
  with config.unlocked():
    for section, key in ((config, "activations"), (config.search, "baselines")):
      section[key] = tuple(str(expression.parse(str(name))) for name in section[key])
  return config


def _completed(config) -> tuple[list[str], ml_collections.ConfigDict | None]:
  """(problems, the completed config: None when a field name or type is wrong)."""
  unknown = defaults.unknown_fields(config)
  if unknown:
    return unknown, None
  try:
    full = defaults.complete(config)
  except ConfigError as e:  # a value of another type than the field's
    return str(e).splitlines(), None
  return _bad_values(full), full


def check_override(dotted: str) -> None:
  """Raises ConfigError when a command-line override `--config.<dotted>` names no field."""
  known = reference()
  parts = dotted.split(".")
  for depth, key in enumerate(parts):
    path = ".".join(parts[:depth])
    if defaults.is_free_form(path):
      return
    if not isinstance(known, ml_collections.ConfigDict):
      raise ConfigError(f"--config.{dotted}: config.{path} is a value, not a section")
    if key not in known:
      close = difflib.get_close_matches(key, list(known.keys()), n=1, cutoff=0.6)
      hint = f" (did you mean --config.{'.'.join(parts[:depth] + [close[0]])}?)" if close else ""
      raise ConfigError(f"--config.{dotted}: config{'.' + path if path else ''} has no field "
                        f"{key!r}{hint}")
    known = known[key]
