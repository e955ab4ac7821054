"""A search with a Fisher budget (config.search.fisher_budget), end to end on the tiny digits
space: the featured classes are exactly the baselines plus the rounds' picks (recomputed by
an independent reference from what the store holds), the surrogate never proposes another,
and a search killed inside a round resumes it without losing or redoing one."""

import json
import os

import numpy as np
import pytest

from actbench import modes, search
from actbench.expr import features
from actbench.search import class_features, store
from tests import featurize_reference
from tests.test_search import spy_on_training, tiny_config


def _budget_config(**fields):
  # 19 classes; the 3 baselines plus 6 more in rounds of 3, after 0 and 3 evaluations.
  return tiny_config(fisher_budget=6, fisher_round=3, **fields)


@pytest.mark.slow
def test_budgeted_search_features_the_rounds_picks_and_resumes_a_killed_round(
    tmp_path, monkeypatch):
  workdir = str(tmp_path)
  config = _budget_config(budget=6)
  real_rows = class_features._fisher_rows  # pylint: disable=protected-access
  calls = []

  def killed_in_round_one(*args, **kwargs):
    calls.append(args[1])
    if len(calls) == 2:  # the baselines with round 0, then round 1: killed mid-round
      raise KeyboardInterrupt("killed")
    return real_rows(*args, **kwargs)

  monkeypatch.setattr(class_features, "_fisher_rows", killed_in_round_one)
  with pytest.raises(KeyboardInterrupt):
    modes.run(config, workdir)
  with store.Store(search.store_path(workdir)) as db:
    round_one = db.get_meta(class_features.ROUND_KEY.format(1))
  assert round_one is not None  # picked and stored before its features were computed
  trained = spy_on_training(monkeypatch)
  modes.run(config, workdir)
  assert len(calls) == 3  # round 1's features once more, nothing else computed twice
  with store.Store(search.store_path(workdir)) as db:
    classes, evaluations = db.classes(), db.evaluations()
    sketches, have_sketch = db.features(class_features.SKETCH)
    width, have_fisher = db.feature_presence(class_features.FISHER)
    rounds = [json.loads(db.get_meta(class_features.ROUND_KEY.format(r))) for r in range(2)]
    assert db.get_meta(class_features.ROUND_KEY.format(2)) is None
    assert db.feature_presence(class_features.OUTPUTS)[1].sum() == 0  # never all outputs
  assert json.loads(round_one) == rounds[1]  # the resumed round is the stored one
  assert len(evaluations) == 6 and width > 0 and have_sketch.all()
  # The stored sketches, against the float64 reference from the outputs themselves.
  outputs = features.outputs([members[0] for members in classes])
  np.testing.assert_allclose(sketches, featurize_reference.sketch(outputs), rtol=1e-4,
                             atol=1e-4)
  # Each round's picks again, independently, from the sketches and the evaluations known
  # when it was picked (the first `after` in the store's order).
  names = [members[0] for members in classes]
  baselines = [names.index(name) for name in tiny_config().search.baselines]
  featured = np.zeros(len(classes), bool)
  featured[baselines] = True
  order = list(evaluations)
  for r, record in enumerate(rounds):
    history = {}
    for class_id in order[:record["after"]]:
      evaluation = evaluations[class_id]
      history[class_id] = (evaluation.metrics["validation_accuracy"]
                           if evaluation.status == "ok" else float("nan"))
    assert record["ids"] == featurize_reference.picks(sketches, featured, history, 3,
                                                      [int(tiny_config().seed), r])
    featured[record["ids"]] = True
  assert np.flatnonzero(have_fisher).tolist() == np.flatnonzero(featured).tolist()
  assert set(evaluations) <= set(np.flatnonzero(featured).tolist())  # never an unfeatured one
  assert rounds[0]["after"] == 0 and rounds[1]["after"] == 3
  # The report draws the map of the featured classes from the store.
  os.remove(os.path.join(workdir, "surrogate_map.png"))
  config.mode = "report"
  modes.run(config, workdir)
  assert os.path.getsize(os.path.join(workdir, "surrogate_map.png")) > 0
  # The killed run had recorded the baselines' population: the restart trains only the next.
  assert len(trained) == 1 and not set(trained[0]) & set(tiny_config().search.baselines)
