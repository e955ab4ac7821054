"""The mistakes a user can make, as one family of exceptions, apart from bugs.

Every error that actbench raises about what a user gave (a config field or value, an
activation, a dataset, a model, a workdir, a store or a benchmark table) is an `InputError`:
its message says what is wrong and where, so the launcher prints it on one line. Anything
else (a bug in actbench, JAX or another library) keeps its traceback. Each stage's own
error subclasses `InputError` and the builtin it refines (`ValueError`, `OSError`), so code
that catches the builtin keeps working.

This module sits below every stage: each may import it.
"""


class InputError(Exception):
  """Something the user gave is wrong; the message names it and says where."""


class ConfigError(InputError, ValueError):
  """A config names a field that does not exist, or gives a field a value it cannot take."""
