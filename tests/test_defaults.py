"""One source for every default: a config completed once over configs/common.py's fields, and
the bounded cache of what a long run reuses."""

import importlib

import ml_collections
import pytest

from actbench import defaults
from actbench.engine import caching, population
from actbench.errors import ConfigError
from configs import common


def _leaves(config, prefix=""):
  for key in config.keys():
    value = config[key]
    if isinstance(value, ml_collections.ConfigDict) and f"{prefix}{key}" != "model.kwargs":
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value.to_dict() if hasattr(value, "to_dict") else value


def test_a_partial_config_gets_every_default_and_keeps_its_own_fields():
  given = ml_collections.ConfigDict({
      "seed": 3, "train": {"learning_rate": 1, "decay_epochs": [2, 4]},
      "model": {"name": "resnet20", "kwargs": {"width": 3}},
      "search": {"claim_ttl_s": 90.0}})
  before = given.to_json(sort_keys=True)
  full = defaults.complete(given)
  assert given.to_json(sort_keys=True) == before  # the caller's config is left alone
  expected = dict(_leaves(common.base_config()))
  expected.update({"seed": 3, "train.learning_rate": 1.0, "train.decay_epochs": (2, 4),
                   "model.name": "resnet20", "model.kwargs": {"width": 3},
                   "search.claim_ttl_s": 90.0})
  assert dict(_leaves(full)) == expected
  assert isinstance(full.train.learning_rate, float)  # an int where a float goes, as ConfigDict
  # Complete already: unchanged, whatever the number of times.
  assert defaults.complete(full).to_json(sort_keys=True) == full.to_json(sort_keys=True)


@pytest.mark.parametrize("name", ["quickstart", "cnn", "resnet", "vit", "cifar100_allcnnc",
                                  "cifar100_resnet56", "imagenet_resnet50", "imagenet_mobilevit",
                                  "imagenet_coatnet", "digits_bench", "digits_bench_v1"])
@pytest.mark.parametrize("variant", ["", "smoke"])
def test_a_config_made_from_the_defaults_comes_back_equal(name, variant):
  config = importlib.import_module(f"configs.{name}").get_config(variant)
  # The very JSON, in its order: checkpoint directories and store fingerprints are named by it.
  assert defaults.complete(config).to_json() == config.to_json()


def test_a_frozen_config_is_completed_too():
  from configs import quickstart  # pylint: disable=import-outside-toplevel
  frozen = ml_collections.FrozenConfigDict(quickstart.get_config())
  assert (defaults.complete(frozen).to_json(sort_keys=True)
          == quickstart.get_config().to_json(sort_keys=True))


@pytest.mark.parametrize("fields, named", [
    ({"train": {"learnig_rate": 0.1}}, "config.train.learnig_rate is not a field (did you mean "
                                       "'learning_rate'?"),
    ({"trian": {}}, "config.trian is not a field (did you mean 'train'?"),
    ({"train": 3}, "config.train must be a section"),
    ({"seed": {"value": 1}}, "config.seed must be a value like 0, got a section"),
    ({"train": {"num_epochs": 2.5}}, "config.train.num_epochs = 2.5"),
])
def test_an_unknown_field_or_a_value_of_another_type_is_refused_by_name(fields, named):
  with pytest.raises(ConfigError) as error:
    defaults.complete(ml_collections.ConfigDict(fields))
  assert named in str(error.value)


def test_population_options_are_read_in_one_place():
  config = common.base_config()
  config.population.strategy, config.population.group_size = "grouped", 4
  assert population.program_options(config) == {"strategy": "grouped", "group_size": 4,
                                                 "normalize": False}
  assert population.program_options(common.base_config())["group_size"] == (
      population.DEFAULT_GROUP_SIZE)


def test_bounded_cache_keeps_the_most_recently_used():
  cache = caching.BoundedCache(3)
  made = []

  def make(key):
    made.append(key)
    return f"value of {key}"

  # A brute-force reference: the keys in order of last use, the oldest dropped past 3; a key
  # not among them is made again.
  kept, misses = [], []
  for key in [1, 2, 3, 1, 4, 2, 5, 1, 3, 3, 6, 1]:
    assert cache.get(key, lambda key=key: make(key)) == f"value of {key}"
    if key in kept:
      kept.remove(key)
    else:
      misses.append(key)
    kept = (kept + [key])[-3:]
    assert len(cache) == len(kept)
  assert made == misses == [1, 2, 3, 4, 2, 5, 1, 3, 6]
  cache.clear()
  assert len(cache) == 0


def test_the_library_entry_points_take_a_partial_config():
  from actbench import fisher  # pylint: disable=import-outside-toplevel
  names = ["relu(x)", "tanh(x)"]
  partial = ml_collections.ConfigDict({"fisher": {"batch_size": 16}})
  full = common.base_config()
  full.fisher.batch_size = 16
  result = fisher.features(partial, names)
  assert result.features.shape[0] == 2 and not result.failed
  assert (result.features == fisher.features(full, names).features).all()
