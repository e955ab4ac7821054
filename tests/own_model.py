"""Models of "a user's own", for tests: found by import path ('tests.own_model:MLP')."""

from collections.abc import Callable

import flax.linen as nn


class MLP(nn.Module):
  """A plain MLP on vectors or flattened images: no `train` argument, no dtype field."""

  act: Callable  # any function of one array
  num_classes: int = 10
  hidden: int = 32

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    x = self.act(nn.Dense(self.hidden)(x))
    return nn.Dense(self.num_classes)(x)


def make_wide_mlp(act):
  """A factory function taking only the activation."""
  return MLP(act, hidden=48)
