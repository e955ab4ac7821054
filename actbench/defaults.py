"""Every config field's default, in one place: configs/common.py's `base_config()`.

A config states only what it changes; `complete` puts the user's fields over the defaults
once, where a config enters actbench (the launcher, `search.run`, `train.train_population`,
`fisher.features`), so every stage below reads its fields directly and no default is
written twice. A field that `base_config()` does not have is refused, with the closest
known one:

    config = defaults.complete(config)      # ConfigError: config.train.learnig_rate is not...

This module sits below every stage: each may import it.
"""

from __future__ import annotations

import difflib

import ml_collections

from actbench.errors import ConfigError

# Sections whose fields are the user's own (a model's constructor arguments).
FREE_FORM = ("model.kwargs",)


def reference() -> ml_collections.ConfigDict:
  """Every field and its default (configs/common.py)."""
  from configs import common  # pylint: disable=import-outside-toplevel  # the configs package
  return common.base_config()


def is_free_form(dotted: str) -> bool:
  """Whether `dotted` (a field's path without 'config.') lies in a FREE_FORM section."""
  return any(dotted == free or dotted.startswith(free + ".") for free in FREE_FORM)


def unknown_fields(config, known=None, path: str = "") -> list[str]:
  """One line per field of `config` that `known` (default: `reference()`) lacks, naming the
  closest known one, and per field that is a section in one and a value in the other."""
  known = reference() if known is None else known
  problems = []
  for key in config.keys():
    dotted = f"{path}.{key}" if path else key
    if is_free_form(dotted):
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
        problems.extend(unknown_fields(value, expected, dotted))
    elif isinstance(value, ml_collections.ConfigDict):
      problems.append(f"config.{dotted} must be a value like {expected!r}, got a section")
  return problems


def complete(config) -> ml_collections.ConfigDict:
  """A new ConfigDict: `config`'s fields over `reference()`'s defaults (a config made from
  `base_config()` comes back equal). `config` itself is not changed.

  Raises:
    ConfigError: `config` names a field that does not exist, or gives one a value of another
      type than its default's (an int where a float is expected is converted, as ConfigDict
      does in a config file).
  """
  full = reference()
  problems = unknown_fields(config, full)
  if problems:
    raise ConfigError("\n".join(problems))
  _merge(full, config, "")
  return full


def _merge(full: ml_collections.ConfigDict, given, path: str) -> None:
  for key in given.keys():
    dotted = f"{path}.{key}" if path else key
    value = given[key]
    if isinstance(value, ml_collections.ConfigDict) and not is_free_form(dotted):
      _merge(full[key], value, dotted)
      continue
    if isinstance(value, ml_collections.FrozenConfigDict):  # the user's own fields, as given
      value = ml_collections.ConfigDict(value)
    elif isinstance(value, ml_collections.ConfigDict):  # ... in their order: checkpoint
      value = value.copy_and_resolve_references()     # directories are named by the JSON
    try:
      full[key] = value
    except TypeError as e:
      raise ConfigError(f"config.{dotted} = {value!r}: {e}") from e
