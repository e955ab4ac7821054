"""Activation functions as immutable expression trees, parsed from and printed to strings.

Grammar (METHOD.md section 1), whitespace ignored:

    expr := 'x' | NAME '(' expr (',' expr)* ')'

Schemas use the same grammar with the placeholders `unary`, `binary` and `n-ary` in place of
operators: `binary(unary(x),unary(x))`.

The canonical form prints without spaces, `max(relu(x),cosh(elu(x)))`; it is the name under which
benchmark files store a function, and `parse(str(e)) == e` for every tree.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterator

from actbench import errors
from actbench.expr import operators

# Deeper trees are refused; no activation worth training nests this deep, and it keeps every
# recursive walk far from Python's recursion limit.
MAX_DEPTH = 64



class ExpressionError(errors.InputError, ValueError):
  """A malformed expression, schema or operator use. The message quotes the input and points
  at the position of the problem."""

  def __init__(self, problem: str, text=None, position: int | None = None):
    self.problem = problem
    self.text = text
    self.position = position
    message = problem
    if isinstance(text, str):
      shown = text if len(text) <= 200 else text[:200] + "..."
      if position is not None:
        message += f" at position {position} in {shown!r}"
        if position <= 200 and "\n" not in shown:
          message += f"\n    {shown}\n    {' ' * position}^"
      else:
        message += f" in {shown!r}"
    super().__init__(message)


class Expr:
  """An immutable expression tree: an operator (or 'x', or a placeholder) and its arguments.

  Equal trees compare and hash equal; `str(e)` is the canonical form. Build trees with
  `parse`; the constructor does not check operators or arities.
  """

  __slots__ = ("op", "args", "_text", "_hash", "_size")

  def __init__(self, op: str, args: tuple[Expr, ...] = ()):
    args = tuple(args)
    text = f"{op}({','.join([a._text for a in args])})" if args else op
    size = 1
    for arg in args:
      size += arg._size
    setattr_ = object.__setattr__
    setattr_(self, "op", op)
    setattr_(self, "args", args)
    setattr_(self, "_text", text)  # canonical, so it identifies the tree
    setattr_(self, "_hash", hash(text))
    setattr_(self, "_size", size)

  def __setattr__(self, name, value):
    raise AttributeError("Expr is immutable")

  def __delattr__(self, name):
    raise AttributeError("Expr is immutable")

  def __eq__(self, other):
    return self is other or (isinstance(other, Expr) and self._text == other._text)

  def __hash__(self):
    return self._hash

  def __str__(self):
    return self._text

  def __repr__(self):
    return f"Expr({self._text!r})"

  def __reduce__(self):
    return (parse_schema, (self._text,))

  @property
  def depth(self) -> int:
    """Levels of the tree; 'x' alone has depth 1."""
    return 1 + max((a.depth for a in self.args), default=0)

  @property
  def size(self) -> int:
    """Number of nodes, leaves included."""
    return self._size

  @property
  def is_leaf(self) -> bool:
    return not self.args

  def nodes(self) -> Iterator[Expr]:
    """All nodes in pre-order (a node before its arguments, arguments left to right)."""
    stack = [self]
    while stack:
      node = stack.pop()
      yield node
      stack.extend(reversed(node.args))

  def placeholders(self) -> list[Expr]:
    """The placeholder nodes (`unary`, `binary`, `n-ary`) in pre-order."""
    return [n for n in self.nodes() if n.op in operators.ARITIES]


X = Expr("x")

_NAME = r"[A-Za-z_][A-Za-z0-9_]*(?:-[A-Za-z_][A-Za-z0-9_]*)*"
# Every token is a name, a parenthesis or comma, or a stray character (an error).
_SCAN = re.compile(rf"({_NAME})|([(),])|(\S)")
_ARGUMENT_BOUNDS = {operators.UNARY: (1, 1), operators.BINARY: (2, 2),
                    operators.NARY: (2, float("inf"))}


def _token_position(text: str, index: int) -> int:
  """Where token `index` starts (token positions are only needed for error messages)."""
  for i, match in enumerate(_SCAN.finditer(text)):
    if i == index:
      return match.start()
  return len(text)


def _parse(text, allow_placeholders: bool) -> Expr:
  """Iterative recursive descent: a stack of open calls, each [name, position, args]."""
  if not isinstance(text, str):
    raise ExpressionError(
        f"an expression must be a string, got {type(text).__name__} {text!r:.80}")
  # (name, punctuation, stray character) per token, exactly one of them non-empty.
  tokens = _SCAN.findall(text)
  if not tokens:
    raise ExpressionError("empty expression", text, 0)

  def fail(problem, token_index):
    raise ExpressionError(problem, text, _token_position(text, token_index))

  registry = operators._REGISTRY  # pylint: disable=protected-access
  arities = operators.ARITIES
  stack: list[list] = []  # open calls: [name, token index, args]
  index = 0
  count = len(tokens)
  while True:
    # An expression starts at tokens[index].
    if index >= count:
      raise ExpressionError("expected an expression, found the end", text, len(text))
    value, punctuation, stray = tokens[index]
    if not value:
      if stray:
        fail(f"unexpected character {stray!r}", index)
      fail(f"expected an expression, found {punctuation!r}", index)
    index += 1
    opens_call = index < count and tokens[index][1] == "("
    if value == "x":
      if opens_call:
        fail("'x' is the input and takes no arguments", index - 1)
      node = X
    elif not opens_call:
      if value in registry or value in arities:
        fail(f"{value!r} must be called, as in {value}(x)", index - 1)
      fail(f"unknown name {value!r} (the input is 'x')", index - 1)
    else:
      if len(stack) + 2 > MAX_DEPTH:  # this call and at least a leaf below it
        fail(f"nesting too deep (more than {MAX_DEPTH} levels)", index - 1)
      if value in arities:
        if not allow_placeholders:
          fail(f"placeholder {value!r} is only allowed in a schema (see parse_schema)",
               index - 1)
      elif value not in registry:
        close = difflib.get_close_matches(value, list(registry), n=3)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        fail(f"unknown operator {value!r} ({hint}known: {', '.join(registry)})", index - 1)
      stack.append([value, index - 1, []])
      index += 1  # past '('
      continue
    # A complete node: attach it to the open calls, closing them as far as ')' allows.
    while stack:
      stack[-1][2].append(node)
      if index >= count:
        fail(f"unclosed '(' of {stack[-1][0]!r}", stack[-1][1])
      found, punctuation, stray = tokens[index]
      index += 1
      if punctuation == ",":
        break
      if stray:
        fail(f"unexpected character {stray!r}", index - 1)
      if punctuation != ")":
        fail(f"expected ',' or ')', found {found!r}", index - 1)
      name, name_index, args = stack.pop()
      arity = name if name in arities else registry[name].arity
      minimum, maximum = _ARGUMENT_BOUNDS[arity]
      if not minimum <= len(args) <= maximum:
        wanted = str(minimum) if minimum == maximum else f"at least {minimum}"
        plural = "" if wanted == "1" else "s"
        kind = "placeholder" if name in arities else f"{arity} operator"
        fail(f"{kind} {name!r} takes {wanted} argument{plural}, got {len(args)}", name_index)
      node = Expr(name, args)
    else:
      if index < count:
        position = _token_position(text, index)
        raise ExpressionError(f"unexpected trailing text {text[position:].strip()!r}", text,
                              position)
      return node


@functools.lru_cache(maxsize=1 << 17)
def _parse_cached(text: str, allow_placeholders: bool) -> Expr:
  return _parse(text, allow_placeholders)


def parse(text) -> Expr:
  """Parses an activation function such as 'max(relu(x),cosh(elu(x)))'.

  An Expr is returned unchanged. Raises ExpressionError (a ValueError) for anything malformed.
  """
  if isinstance(text, Expr):
    if text.placeholders():
      raise ExpressionError("a schema with placeholders is not an activation function",
                            str(text))
    return text
  if not isinstance(text, str):
    return _parse(text, False)  # raises the type error
  return _parse_cached(text, False)


def parse_schema(text) -> Expr:
  """Parses a schema, an expression that may contain `unary`, `binary`, `n-ary` placeholders."""
  if isinstance(text, Expr):
    return text
  if not isinstance(text, str):
    return _parse(text, True)
  return _parse_cached(text, True)


def _clear_cache():
  _parse_cached.cache_clear()


operators._ON_CHANGE.append(_clear_cache)
