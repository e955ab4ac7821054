"""Checkpoint identity: a population's checkpoints are named by what its training depends on
only, so a search resumed with other search, surrogate or report settings resumes them; and the
workdir's finished or outdated checkpoint directories are removed."""

import json
import os
import time

import ml_collections
import pytest

from actbench.engine import data, train, trainer
from configs import common, quickstart

# The reference, written independently of train.training_identity: per field of
# configs/common.py (a dotted prefix covers a section), whether training depends on it.
TRAINING = ("dataset", "model", "train", "population", "seed", "seeds")
NOT_TRAINING = ("mode", "activations", "checkpoint_every_epochs", "fisher", "search",
                "surrogate", "benchmark", "replay", "report",
                "dataset.data_dir", "dataset.download")  # where the data is, not what it is

NAMES, SEEDS, SOURCE = ["relu(x)", "tanh(x)"], [0, 0], "data/model"


def _leaves(config, path=""):
  for key in config.keys():
    dotted = f"{path}.{key}" if path else key
    if isinstance(config[key], ml_collections.ConfigDict):
      yield from _leaves(config[key], dotted)
    else:
      yield dotted


def _changed(value):
  """Another value of the same type."""
  if isinstance(value, bool):
    return not value
  if isinstance(value, (int, float)):
    return value + 1
  if isinstance(value, str):
    return value + "_other"
  if isinstance(value, tuple):
    return value[:-1] if value else (1,)
  raise AssertionError(f"no other value for {value!r}")


def _depends(dotted: str) -> bool:
  def within(prefixes):
    return max((len(p) for p in prefixes if dotted == p or dotted.startswith(p + ".")),
               default=-1)
  training, other = within(TRAINING), within(NOT_TRAINING)
  assert max(training, other) >= 0, f"config.{dotted}: add it to TRAINING or NOT_TRAINING"
  return training > other  # the longer prefix decides (dataset.data_dir within dataset)


def _directory(config, names=NAMES, seeds=SEEDS, source=SOURCE):
  return train.checkpoint_directory("/work", config, names, seeds, source)


def test_checkpoints_are_named_by_what_training_depends_on():
  base = common.base_config()
  reference = _directory(base)
  leaves = list(_leaves(base))
  assert len(leaves) > 80  # every section's fields, not a few
  for dotted in leaves:
    config = common.base_config()
    section, _, name = dotted.rpartition(".")
    owner = config
    for part in filter(None, section.split(".")):
      owner = owner[part]
    owner[name] = _changed(owner[name])
    same = _directory(config) == reference
    assert same != _depends(dotted), f"config.{dotted} {'changes' if same else 'keeps'} ids"
  # The model's own fields (a free-form section, empty by default).
  config = common.base_config()
  config.model.kwargs.use_batch_norm = True
  assert _directory(config) != reference
  # A search's training config encodes over the space: another program, another identity.
  config = common.base_config()
  config.population.schema = base.search.space
  assert _directory(config) != reference
  # The population itself: its functions, their seeds and order, and its data and model.
  assert _directory(base, names=NAMES[::-1]) != reference
  assert _directory(base, seeds=[0, 1]) != reference
  assert _directory(base, source="other data/model") != reference
  # A partial config is named as its completion (train_population completes it first).
  partial = ml_collections.ConfigDict({"train": {"num_epochs": 10}})
  assert _directory(partial) == reference


def test_a_search_resumed_with_another_budget_resumes_its_checkpoints(tmp_path, monkeypatch):
  digits = data.load("digits")
  config = quickstart.get_config("smoke")
  config.train.num_epochs = 2
  names, seeds, workdir = ["relu(x)"], [0], str(tmp_path)
  with pytest.raises(train.TrainingInterrupted):
    train.train_population(config, names, seeds, dataset=digits, workdir=workdir,
                           stop_after_epoch=1)
  (directory,) = train.checkpoint_directories(config, names, seeds, workdir, dataset=digits)
  record = train.read_population(directory)
  assert record["names"] == names and record["seeds"] == seeds
  assert record["id"] == os.path.basename(directory)
  resumed_config = config.copy_and_resolve_references()
  resumed_config.search.budget = 2 * config.search.budget
  resumed_config.surrogate.neighbors = 5
  resumed_config.report.best_functions = 3
  resumed_config.mode = "benchmark"
  trained = []  # the epochs the resumed run trains
  train_epoch = trainer.PopulationTrainer.train_epoch
  monkeypatch.setattr(trainer.PopulationTrainer, "train_epoch",
                      lambda self, *args: trained.append(args[-1]) or train_epoch(self, *args))
  resumed = train.train_population(resumed_config, names, seeds, dataset=digits,
                                   workdir=workdir)
  assert trained == [1]  # only the epoch after the checkpoint
  assert resumed.history[0]["resumed_from_epoch"] == 1
  assert train.checkpoint_directories(resumed_config, names, seeds, workdir,
                                      dataset=digits) == [directory]
  monkeypatch.undo()
  uninterrupted = train.train_population(resumed_config, names, seeds, dataset=digits)
  assert uninterrupted.history[0]["resumed_from_epoch"] == 0
  assert resumed.metrics == uninterrupted.metrics
  assert resumed.history[0]["epochs"] == uninterrupted.history[0]["epochs"]
  # Once the population's results are recorded, its directory goes.
  assert train.remove_checkpoints(workdir, lambda trained_names: False) == []
  assert train.remove_checkpoints(workdir, lambda trained_names: trained_names == names) == [
      directory]
  assert not os.path.exists(directory)


def _population(workdir, names, seeds):
  directory = train._make_checkpoint_directory(  # pylint: disable=protected-access
      workdir, common.base_config(), names, seeds, SOURCE)
  os.makedirs(os.path.join(directory, "1"))  # a checkpoint in it
  return directory


def _age(directory, seconds):
  old = time.time() - seconds
  for folder, subfolders, files in os.walk(directory):
    for name in subfolders + files:
      os.utime(os.path.join(folder, name), (old, old))
  os.utime(directory, (old, old))


def test_remove_checkpoints_removes_finished_and_outdated_populations_only(tmp_path):
  workdir = str(tmp_path)
  recorded = {"relu(x)", "tanh(x)", "elu(x)"}
  asked = []

  def finished(names):
    asked.append(names)
    return all(name in recorded for name in names)

  done = _population(workdir, ["relu(x)", "relu(x)", "tanh(x)", "tanh(x)"], [0, 1, 0, 1])
  also_done = _population(workdir, ["elu(x)"], [0])
  training = _population(workdir, ["relu(x)", "swish(x)"], [0, 0])  # swish is not recorded
  with open(os.path.join(done, train.POPULATION_FILE), encoding="utf-8") as f:
    assert json.load(f)["names"] == ["relu(x)", "relu(x)", "tanh(x)", "tanh(x)"]
  checkpoints = os.path.join(workdir, train.CHECKPOINTS)
  # Directories of an older version: no population file. An old one goes, one written within
  # legacy_age_s stays (an older process may be writing it), and so does a new one's before
  # its population file is written.
  outdated, recent = (os.path.join(checkpoints, name) for name in ("0" * 16, "1" * 16))
  for directory in (outdated, recent):
    os.makedirs(os.path.join(directory, "3"))
  _age(outdated, train.LEGACY_AGE_S + 60)
  _age(recent, train.LEGACY_AGE_S - 600)
  with open(os.path.join(recent, "3", "state"), "w", encoding="utf-8") as f:
    f.write("written now")  # touched inside: still being written
  _age(training, train.LEGACY_AGE_S + 60)  # old, but not finished: stays
  unreadable = os.path.join(checkpoints, "2" * 16)  # a population file being replaced
  os.makedirs(unreadable)
  with open(os.path.join(unreadable, train.POPULATION_FILE), "w", encoding="utf-8") as f:
    f.write('{"names": [')
  others = [os.path.join(checkpoints, "notes.txt"), os.path.join(checkpoints, "mine")]
  with open(others[0], "w", encoding="utf-8") as f:
    f.write("a user's file")
  os.makedirs(others[1])
  _age(others[1], train.LEGACY_AGE_S + 60)
  removed = train.remove_checkpoints(workdir, finished)
  assert sorted(removed) == sorted([done, also_done, outdated])
  assert sorted(asked) == [["elu(x)"], ["relu(x)", "swish(x)"], ["relu(x)", "tanh(x)"]]
  for directory in (training, recent, unreadable, *others):
    assert os.path.exists(directory), directory
  for directory in removed:
    assert not os.path.exists(directory)
  assert train.remove_checkpoints(workdir, lambda names: True) == [training]
  assert train.remove_checkpoints(str(tmp_path / "no workdir yet"), finished) == []
