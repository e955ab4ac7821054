"""Fisher features from an experiment config, by both methods."""

import numpy as np
import pytest

from actbench.engine import data
from actbench.fisher import experiment as fisher_features
from configs import quickstart

NAMES = ["relu(x)", "tanh(x)", "reciprocal(zero(x))"]


@pytest.fixture(scope="module")
def digits():
  return data.load("digits")


def config_for(method):
  config = quickstart.get_config("smoke")
  config.fisher.method = method
  config.fisher.batch_size = 32
  return config


def test_fisher_batch_is_the_first_training_batch(digits):
  images, labels = fisher_features.fisher_batch(config_for("kfac"), digits)
  rows = digits.train.batch_indices(32, seed=0, epoch=0)[0]
  np.testing.assert_array_equal(labels, digits.train.gather(rows)["label"])
  assert images.shape == (32, 8, 8, 1) and images.dtype == np.float32


@pytest.mark.slow
@pytest.mark.parametrize("method", ["kfac", "lanczos"])
def test_features_by_method_with_a_failing_candidate(method, digits):
  result = fisher_features.features(config_for(method), NAMES, dataset=digits)
  assert result.features.shape[0] == 3 and result.features.dtype == np.float32
  assert set(result.failed) == {2}
  assert np.all(np.isnan(result.features[2]))
  healthy = result.features[:2]
  assert np.all(np.isfinite(healthy))
  assert np.all((healthy >= 0) & (healthy <= 1))
  assert not np.array_equal(healthy[0], healthy[1])  # the activation shows in the spectrum
  if method == "lanczos":
    assert result.features.shape[1] == 100
    assert np.all(np.diff(healthy, axis=1) >= 0) and np.allclose(healthy[:, -1], 1.0)
  else:
    assert [layer.num_weights for layer in result.layers] == [160, 4640, 32832, 650]


def test_unknown_method(digits):
  config = config_for("eigen")
  with pytest.raises(ValueError, match="config.fisher.method"):
    fisher_features.features(config, NAMES, dataset=digits)
