"""A bounded cache for what a long run keeps reusing: compiled population programs, trainers,
cross-validation folds.

A search builds the same few programs again and again (one per space, recipe, dataset and
model), so they are kept; but a process that goes through many configs (a notebook, the test
suite, a replay of many tables) must not keep every program it ever compiled.

    _PROGRAMS = caching.BoundedCache(8)
    program = _PROGRAMS.get(key, lambda: build(...))    # build runs only on a miss
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable
from typing import TypeVar

Value = TypeVar("Value")


class BoundedCache:
  """Values by key, at most `maxsize` of them: the least recently used is dropped first."""

  def __init__(self, maxsize: int):
    self.maxsize = maxsize
    self._values: collections.OrderedDict = collections.OrderedDict()

  def get(self, key: Hashable, make: Callable[[], Value]) -> Value:
    """The value kept for `key`, or `make()`'s, kept from now on."""
    if key in self._values:
      self._values.move_to_end(key)
      return self._values[key]
    value = self._values[key] = make()
    while len(self._values) > self.maxsize:
      self._values.popitem(last=False)
    return value

  def __len__(self) -> int:
    return len(self._values)

  def clear(self) -> None:
    self._values.clear()
