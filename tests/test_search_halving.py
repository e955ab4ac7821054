"""A search with successive halving: what it records, proposes and resumes."""

import csv
import json
import math
import os
import signal
import subprocess
import sys

import pytest

from actbench import modes, search
from actbench.engine import trainer
from actbench.search import store, strategies
from tests.test_halving import reference_survivors
from tests.test_search import ROOT, tiny_config

POPULATION = 4  # per round: 4 functions train one epoch, the best 2 a second


def halving_config():
  config = tiny_config(budget=8, population_size=POPULATION)
  config.train.num_epochs = 2
  config.search.fidelity.rungs = (1, 2)
  config.search.fidelity.eta = 2
  return config


# Run in a process of its own and killed with SIGKILL in the second round, once its first rung
# is checkpointed and the survivors' second epoch is about to train.
KILLED_SEARCH = """
import json, os, signal, sys
from actbench import modes
from actbench.engine import train, trainer
from tests.test_search_halving import halving_config
real_group, calls = train._train_group, []

def killed_in_round_two(*args, until=None, **kwargs):
  calls.append(until)
  if len(calls) == 4:  # round 1: rungs 1 and 2; round 2: rung 1, then this
    with open(os.path.join(sys.argv[1], "compiled.json"), "w") as f:  # programs per trainer
      json.dump([t.train_program()._cache_size() for t in trainer._TRAINERS._values.values()], f)
    os.kill(os.getpid(), signal.SIGKILL)
  return real_group(*args, until=until, **kwargs)

train._train_group = killed_in_round_two
modes.run(halving_config(), sys.argv[1])
"""


@pytest.mark.slow
def test_a_halving_search_records_proposes_and_resumes_by_its_rungs(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  config = halving_config()
  process = subprocess.run([sys.executable, "-c", KILLED_SEARCH, workdir], cwd=ROOT,
                           env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                           text=True, check=False)
  assert process.returncode == -signal.SIGKILL, process.stderr[-3000:]
  with open(os.path.join(workdir, "compiled.json"), encoding="utf-8") as f:
    # A round's rungs share its programs, one per population size: round 1's of 4 and 2
    # functions, round 2's of 4 so far. (The tiny space has operator tables of its own, so
    # each round is encoded over its functions; over the default tables every round shares
    # one encoding and its programs.)
    assert json.load(f) == [2, 1]
  with store.Store(search.store_path(workdir)) as db:
    assert len(db.evaluations()) == POPULATION  # round 1 recorded, round 2 not
  epochs = []  # (members, epoch) of every epoch the restart trains
  train_epoch = trainer.PopulationTrainer.train_epoch

  def spy(self, state, codes, seeds, epoch):
    epochs.append((int(codes.shape[0]), epoch))
    return train_epoch(self, state, codes, seeds, epoch)

  monkeypatch.setattr(trainer.PopulationTrainer, "train_epoch", spy)
  text = modes.run(config, workdir)
  assert epochs == [(2, 1)]  # round 2's first rung came from its checkpoint

  with store.Store(search.store_path(workdir)) as db:
    classes, evaluations = db.classes(), db.evaluations()
    outputs, fisher = db.features(search.OUTPUTS)[0], db.features(search.FISHER)[0]
    layout = db.features(search.embedding_kind(config))[0]
  order = list(evaluations)
  assert len(order) == 2 * POPULATION
  statuses = [evaluations[i].status for i in order]
  assert statuses.count("stopped") == 4 and "failed" not in statuses
  # In each round the survivors are those an independent reading of the recorded epoch-1
  # curves ranks best; they trained both epochs, the others one.
  for start in (0, POPULATION):
    population = order[start:start + POPULATION]
    scores = [math.nan if evaluations[i].curve("failed")[0] else
              evaluations[i].curve("validation_accuracy")[0] for i in population]
    survivors = {population[k] for k in reference_survivors(scores, 2)}
    for class_id in population:
      evaluation = evaluations[class_id]
      full = class_id in survivors
      assert evaluation.status == ("ok" if full else "stopped")
      assert evaluation.metrics["epochs"] == (2.0 if full else 1.0)
      curve = evaluation.curve("validation_accuracy")
      assert len(curve) == (2 if full else 1)
      assert curve[-1] == evaluation.metrics["validation_accuracy"]
  # Round 2 is aquasurf's proposal from round 1's full-fidelity results alone, the stopped
  # classes excluded (never proposed again, never learnt from).
  candidates = strategies.Candidates(classes, outputs, fisher, schema=config.search.space,
                                     baselines=search.baseline_names(config))
  strategy = strategies.make_strategy("aquasurf", candidates, seed=int(config.seed),
                                      embedding=layout, neighbors=3)
  first = order[:POPULATION]
  history = {i: evaluations[i].metrics["validation_accuracy"] for i in first
             if evaluations[i].status == "ok"}
  stopped = [i for i in first if evaluations[i].status == "stopped"]
  assert sorted(strategy.propose(history, POPULATION, exclude=stopped)) == sorted(
      order[POPULATION:])
  # The leaderboard marks the stopped classes and ranks them after the fully trained ones.
  with open(os.path.join(workdir, "leaderboard.csv"), encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  marks = [row["stopped_at_epoch"] for row in rows]
  assert marks == ["", "", "", "", "1", "1", "1", "1"]
  assert "(stopped at epoch 1)" in text
  assert "8 of " in text and "(0 failed, 4 stopped early by successive halving)" in text
  # Nothing of the search's populations is left in the checkpoints.
  assert not os.listdir(os.path.join(workdir, "checkpoints"))
  # A benchmark table of this store would mix partial trainings into full ones: refused.
  config.mode = "benchmark"
  config.search.fidelity.rungs = ()
  with pytest.raises(store.StoreError, match="holds functions successive halving stopped "
                                             "early"):
    modes.run(config, workdir)
