"""Search spaces: schemas enumerated over operator sets, and functional equivalence classes.

A schema is an expression with placeholders, `binary(unary(x),unary(x))`; enumerating it
substitutes every chosen operator for every placeholder (METHOD.md section 2). The benchmark
space is that schema over the 27 unary and 7 binary operators: 5,103 names.

Many names compute the same function. `equivalence_classes` groups them by their output
features (float64 values at the reference points, rounded to float32; NaN and inf positions
included, -0 equal to 0), so that each function is trained once, under one name.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from actbench.expr import features, operators
from actbench.expr.expression import Expr, parse, parse_schema

BENCHMARK_SCHEMA = "binary(unary(x),unary(x))"

# Re-exported so that `space.chunked(enumerate(...), n)` streams a large space.
chunked = features.chunked


def operator_choices(schema, unary: Sequence[str] | None = None,
                     binary: Sequence[str] | None = None,
                     nary: Sequence[str] | None = None) -> list[tuple[str, ...]]:
  """The operators each placeholder of `schema` ranges over, placeholders in pre-order.

  Defaults: the 27 unary and 7 binary operators of the benchmark space, and the 4 n-ary.
  """
  tables = {
      operators.UNARY: operators.resolve(unary, operators.UNARY, operators.BENCHMARK_UNARY),
      operators.BINARY: operators.resolve(binary, operators.BINARY,
                                          operators.BENCHMARK_BINARY),
      operators.NARY: operators.resolve(nary, operators.NARY, operators.DEFAULT_NARY),
  }
  return [tables[node.op] for node in parse_schema(schema).placeholders()]


def _template(node: Expr, counter: Iterator[int]) -> str:
  """The schema as a str.format template with a numbered field per placeholder."""
  head = f"{{{next(counter)}}}" if node.op in operators.ARITIES else node.op
  if node.is_leaf:
    return head
  return f"{head}({','.join(_template(arg, counter) for arg in node.args)})"


def enumerate(schema, unary: Sequence[str] | None = None,  # pylint: disable=redefined-builtin
              binary: Sequence[str] | None = None,
              nary: Sequence[str] | None = None) -> Iterator[str]:
  """Every name of the space, lazily, in a fixed order (the first placeholder varies slowest).

  Args:
    schema: e.g. 'binary(unary(x),unary(x))', 'unary(unary(x))',
      'n-ary(unary(x),unary(x),unary(x))'; any nesting, fixed operators allowed.
    unary, binary, nary: operator names for each kind of placeholder (see operator_choices).

  Yields canonical names; use `size` for the count and `chunked` to stream in batches.
  """
  choices = operator_choices(schema, unary, binary, nary)
  template = _template(parse_schema(schema), itertools.count())
  return (template.format(*combination) for combination in itertools.product(*choices))


def size(schema, unary: Sequence[str] | None = None, binary: Sequence[str] | None = None,
         nary: Sequence[str] | None = None) -> int:
  """The number of names `enumerate` yields, without enumerating."""
  return math.prod(len(c) for c in operator_choices(schema, unary, binary, nary))


def canonical_outputs(values: np.ndarray) -> np.ndarray:
  """float32 outputs with -0 made +0 and every NaN the same NaN, so bytes compare as values."""
  with np.errstate(over="ignore"):
    values = np.asarray(values, np.float32) + np.float32(0)  # -0 + 0 == +0 in IEEE
  values[np.isnan(values)] = np.nan
  return values


def _representative_key(name: str):
  expr = parse(name)
  return (expr.size, len(str(expr)), str(expr), name)


def equivalence_classes(names: Iterable[str],
                        chunk_size: int = features.DEFAULT_CHUNK_SIZE) -> list[list[str]]:
  """Groups names that compute the same function.

  Returns one list per class, representative first, then the other members in input order;
  classes ordered by their first member in the input. The representative is the simplest
  member: fewest nodes, then shortest canonical name, then alphabetical. Repeated names are
  listed once. Streams `names` chunk by chunk; memory grows with the number of classes
  (16 bytes each for the output fingerprint), not with the outputs.

  Raises:
    ExpressionError: a name is malformed (the message quotes it).
  """
  if isinstance(names, (str, Expr)):
    raise TypeError("expected a list of function names, got a single name; wrap it in a list")
  class_of: dict[bytes, int] = {}
  classes: list[list[str]] = []
  seen: set[str] = set()
  for chunk, values in features.iter_outputs(names, chunk_size=chunk_size):
    rows = canonical_outputs(values)
    # Identical rows within the chunk, found by sorting their bytes; one fingerprint each.
    as_bytes = np.ascontiguousarray(rows).view(np.dtype((np.void, rows.shape[1] * 4)))[:, 0]
    unique_rows, first, inverse = np.unique(as_bytes, return_index=True, return_inverse=True)
    chunk_class = []
    for row in first:
      fingerprint = hashlib.blake2b(rows[row].tobytes(), digest_size=16).digest()
      index = class_of.setdefault(fingerprint, len(classes))
      if index == len(classes):
        classes.append([])
      chunk_class.append(index)
    for name, local in zip(chunk, inverse.tolist()):
      name = str(name)
      if name not in seen:
        seen.add(name)
        classes[chunk_class[local]].append(name)
  for members in classes:
    if len(members) > 1:
      best = min(members, key=_representative_key)
      members.remove(best)
      members.insert(0, best)
  return classes


def representatives(names: Iterable[str]) -> list[str]:
  """One name per equivalence class (see equivalence_classes)."""
  return [members[0] for members in equivalence_classes(names)]

