"""The classes a search chooses among (`Candidates`): equivalence classes with their features.

Shared by the surrogate, which embeds them, and the strategies, which choose among them.

    candidates = Candidates.from_names(names, fisher=fisher_rows)
    candidates.index_of("relu(x)")        # its class, by name or by computed outputs
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from actbench.expr import operators, space
from actbench.expr.expression import parse

DEFAULT_BASELINES = tuple(f"{name}(x)" for name in operators.BASELINES)


def _fingerprint(row: np.ndarray) -> bytes:
  """The key space.equivalence_classes compares functions by (canonical float32 outputs)."""
  return hashlib.blake2b(space.canonical_outputs(row[None])[0].tobytes(),
                         digest_size=16).digest()


@dataclasses.dataclass(eq=False)
class Candidates:
  """The classes a search chooses among, with the features the surrogate embeds.

  Attributes:
    classes: equivalence classes, representative first (space.equivalence_classes order).
    outputs: (n, 1000) float32 output features (features.outputs) of the representatives;
      may hold inf and NaN. (n, 0) where they are not kept (a budgeted search of a large
      space): then a name found by its outputs costs one pass over the classes.
    fisher: (n, d) float32 Fisher CDF features; a NaN row is missing (d may be 0).
    schema: the space's schema, for evolution's mutations (None: no evolution).
    baselines: names of the functions aquasurf evaluates first.
  """
  classes: list[list[str]]
  outputs: np.ndarray
  fisher: np.ndarray | None = None
  schema: str | None = None
  baselines: tuple[str, ...] = DEFAULT_BASELINES
  _members: dict | None = dataclasses.field(default=None, init=False, repr=False)
  _fingerprints: dict | None = dataclasses.field(default=None, init=False, repr=False)

  def __post_init__(self):
    self.classes = [[str(m) for m in members] for members in self.classes]
    if not all(self.classes):
      raise ValueError("every equivalence class needs at least one member")
    n = len(self.classes)
    self.outputs = np.asarray(self.outputs, np.float32)
    if self.outputs.ndim != 2 or len(self.outputs) != n:
      raise ValueError(f"outputs must be ({n}, points), got shape {self.outputs.shape}")
    self.fisher = (np.zeros((n, 0), np.float32) if self.fisher is None
                   else np.asarray(self.fisher, np.float32))
    if self.fisher.ndim != 2 or len(self.fisher) != n:
      raise ValueError(f"fisher must be ({n}, d), got shape {self.fisher.shape}")
    self.baselines = tuple(self.baselines)

  def __len__(self):
    return len(self.classes)

  @property
  def names(self) -> list[str]:
    """The representatives, one per class."""
    return [members[0] for members in self.classes]

  def index_of(self, name) -> int | None:
    """The class of a function: by exact member name first, else by its output fingerprint
    (so 'relu(x)' finds the class of 'add(relu(x),zero(x))'); None when no class computes it.

    Raises:
      ExpressionError: `name` is malformed.
    """
    if self._members is None:
      self._members = {}
      for index, members in enumerate(self.classes):
        for member in members:
          self._members.setdefault(member, index)
    text = name if isinstance(name, str) else str(name)
    if text in self._members:
      return self._members[text]
    expr = parse(name)
    if str(expr) in self._members:
      return self._members[str(expr)]
    from actbench.expr import features  # pylint: disable=import-outside-toplevel
    if self._fingerprints is None:
      self._fingerprints = {}
      if self.outputs.shape[1]:
        for index in range(len(self)):
          self._fingerprints.setdefault(_fingerprint(self.outputs[index]), index)
      else:  # outputs not kept (a budgeted search of a large space): computed, streamed
        rows = (row for _, block in features.iter_outputs(self.names) for row in block)
        for index, row in enumerate(rows):
          self._fingerprints.setdefault(_fingerprint(row), index)
    return self._fingerprints.get(_fingerprint(features.outputs_of([expr])[0]))

  def baseline_ids(self) -> list[int]:
    """The classes of the baselines present, in baseline order, each once."""
    ids = []
    for name in self.baselines:
      index = self.index_of(name)
      if index is not None and index not in ids:
        ids.append(index)
    return ids

  @classmethod
  def from_names(cls, names, fisher: np.ndarray | None = None, **kwargs) -> Candidates:
    """Classes of `names` (space.equivalence_classes) with their output features; `fisher`,
    if given, has one row per class."""
    from actbench.expr import features  # pylint: disable=import-outside-toplevel
    classes = space.equivalence_classes(names)
    return cls(classes, features.outputs([c[0] for c in classes]), fisher, **kwargs)

  @classmethod
  def from_table(cls, table, **kwargs) -> Candidates:
    """From a benchmark table (duck-typed: `names`, `equivalents` per name, `fisher` (n, d)):
    its own classes, as given (METHOD.md section 2), the table's name first."""
    from actbench.expr import features  # pylint: disable=import-outside-toplevel
    classes = []
    for name, equivalents in zip(table.names, table.equivalents):
      classes.append([name] + [m for m in equivalents if m != name])
    fisher = getattr(table, "fisher", None)
    return cls(classes, features.outputs(list(table.names)), fisher, **kwargs)
