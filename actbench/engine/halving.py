"""Successive halving over a population: the poor members leave training early.

A population trains to the first rung's epoch; the best 1/eta of its functions, by validation
accuracy at that epoch, go on to the next rung, and so on to the last rung (the full
training). The others stop where they are and keep the accuracy they had there (ASHA's rule,
Li et al. 2020, applied synchronously to one population at a time).

    fidelity = halving.Fidelity(rungs=(2, 5, 10), eta=3)
    fidelity.survivors(scores)   # indices of the functions that go on, best first

`train.train_population(..., fidelity=)` trains by it; `replay` simulates it on a table's
learning curves. Both use `survivors`, so the search and its replay select alike.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from actbench.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Fidelity:
  """The rungs (epochs, increasing, the last the full training) and the reduction factor."""
  rungs: tuple[int, ...]
  eta: int = 3

  def __post_init__(self):
    rungs = tuple(int(r) for r in self.rungs)
    object.__setattr__(self, "rungs", rungs)
    object.__setattr__(self, "eta", int(self.eta))
    if not rungs or any(r < 1 for r in rungs) or any(b <= a for a, b in zip(rungs, rungs[1:])):
      raise ConfigError(f"successive halving's rungs must be increasing positive epochs, got "
                        f"{list(rungs)}")
    if self.eta < 2:
      raise ConfigError(f"successive halving's eta must be at least 2, got {self.eta}")

  @classmethod
  def from_config(cls, config) -> Fidelity | None:
    """config.search.fidelity's halving, or None when it is off (no rungs). The last rung
    must be config.train.num_epochs: a survivor trains exactly as without halving."""
    cfg = config.search.fidelity
    if not cfg.rungs:
      return None
    fidelity = cls(tuple(cfg.rungs), int(cfg.eta))
    epochs = int(config.train.num_epochs)
    if fidelity.rungs[-1] != epochs:
      raise ConfigError(f"config.search.fidelity.rungs must end at config.train.num_epochs "
                        f"({epochs}), got {list(fidelity.rungs)}")
    return fidelity

  def keep(self, count: int) -> int:
    """How many of `count` functions go on from a rung: count // eta, at least one."""
    return max(1, count // self.eta) if count else 0

  def survivors(self, scores: Sequence[float]) -> list[int]:
    """Indices of the functions that go on, best first: the `keep` highest scores (validation
    accuracy at the rung; NaN, a failure, below every number), ties by position (the order
    the strategy proposed them in)."""
    scores = np.asarray(scores, np.float64)
    ranked = np.where(np.isnan(scores), -math.inf, scores)
    order = np.argsort(-ranked, kind="stable")
    return order[:self.keep(len(scores))].tolist()

  def schedule(self, count: int) -> list[int]:
    """How many functions train at each rung when `count` start."""
    sizes = [count]
    for _ in self.rungs[1:]:
      sizes.append(self.keep(sizes[-1]))
    return sizes

  def epochs(self, count: int) -> int:
    """Training epochs one population of `count` functions costs (per seed and fold)."""
    starts = (0,) + self.rungs[:-1]
    return sum(size * (end - start)
               for size, start, end in zip(self.schedule(count), starts, self.rungs))
