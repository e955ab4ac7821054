"""A damaged store loses no evaluation: the journal beside it, `--config.mode=recover`, and the
replay of journaled results a killed process never committed."""

import math
import os
import random

import numpy as np
import pytest

from actbench import modes, search
from actbench.search import journal, recovery
from actbench.search.store import Evaluation, Store, StoreError
from configs import quickstart

SCHEMA = "binary(unary(x),unary(x))"


def _classes(n):
  return [[f"add(u{i}(x),relu(x))", f"add(relu(x),u{i}(x))"] for i in range(n)]


def _evaluation(i):
  status = "failed" if i % 7 == 3 else "ok"
  accuracy = math.nan if status == "failed" else 0.5 + i / 1000
  return Evaluation(i, status, {"validation_accuracy": accuracy, "train_loss": 1.0 / (i + 1)},
                    [{"seed": 0, "validation_accuracy": accuracy}], 3.0 + i, "w", 1e9 + i)


def _build(path, n=300, evaluated=120):
  """A store of n classes, `evaluated` of them recorded, with output features; returns the
  evaluations and feature rows as they were committed."""
  rows = np.random.default_rng(0).normal(size=(n, 64)).astype(np.float32)
  with Store(path) as db:
    db.init_space(SCHEMA, _classes(n))
    db.set_meta("recipe", "r1")
    db.put_features("outputs", range(n), rows)
    for i in range(evaluated):
      db.record(_evaluation(i))
    return db.evaluations(), rows


def _same(a: Evaluation, b: Evaluation) -> bool:
  return repr(a) == repr(b)  # NaN metrics compare equal this way


def _damage(path, rng: random.Random) -> None:
  """Truncates the file, or overwrites a stretch of it with random bytes, at a random offset."""
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    if rng.random() < 0.5:
      f.truncate(rng.randrange(100, size))
    else:
      f.seek(rng.randrange(100, size - 64))
      f.write(bytes(rng.randrange(256) for _ in range(rng.randrange(16, 4096))))


def _checkpoint(path):
  """Moves everything from the write-ahead log into the database file (as a clean close
  does), so that damage to the file reaches committed pages."""
  import sqlite3  # pylint: disable=import-outside-toplevel
  db = sqlite3.connect(path)
  db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
  db.close()


@pytest.mark.parametrize("seed", range(8))
def test_every_committed_evaluation_survives_damage_at_a_random_offset(tmp_path, seed):
  path = str(tmp_path / "search.sqlite")
  committed, rows = _build(path)
  _checkpoint(path)
  _damage(path, random.Random(seed))
  if not recovery.is_damaged(path):  # the damage hit unused space: nothing is lost
    with Store(path) as db:
      assert all(_same(db.evaluations()[i], committed[i]) for i in committed)
    return
  with pytest.raises(StoreError, match="--config.mode=recover"):
    Store(path)
  report = recovery.rebuild(path, SCHEMA, _classes(300))
  assert os.path.exists(report["moved_to"])
  with Store(path) as db:  # intact again
    recovered = db.evaluations()
    assert list(recovered) == list(committed)  # every one, in the recorded order
    assert all(_same(recovered[i], committed[i]) for i in committed)
    kept, present = db.features("outputs")
    if present.any():  # what was read is right
      np.testing.assert_array_equal(kept[present], rows[present])
  assert report["from_journal"] == len(committed)


def test_without_the_journal_what_the_file_still_holds_is_kept(tmp_path):
  path = str(tmp_path / "search.sqlite")
  committed, rows = _build(path)
  _checkpoint(path)
  os.remove(journal.path_of(path))
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size - 4096 * 3)  # the last pages are gone
  assert recovery.is_damaged(path)
  report = recovery.rebuild(path, SCHEMA, _classes(300))
  with Store(path) as db:
    recovered = db.evaluations()
    assert 0 < len(recovered) and report["from_file"] == len(recovered)
    assert all(_same(recovered[i], committed[i]) for i in recovered)
    kept, present = db.features("outputs")
    if present.any():
      np.testing.assert_array_equal(kept[present], rows[present])
  assert journal.read(journal.path_of(path))  # the rebuilt store journals them again


def test_a_journaled_result_never_committed_is_replayed(tmp_path):
  path = str(tmp_path / "search.sqlite")
  committed, _ = _build(path, evaluated=5)
  lost = _evaluation(7)  # journaled, then the process died before the commit
  journal.append(journal.path_of(path), {
      "class_id": 7, "name": _classes(300)[7][0], "status": lost.status,
      "metrics": '{"validation_accuracy": 0.507, "train_loss": 0.125}',
      "per_seed": "[]", "runtime_s": 10.0, "worker": "w", "finished_at": 2e9})
  journal.append(journal.path_of(path), {"class_id": 8, "name": "another(x)", "status": "ok"})
  with open(journal.path_of(path), "a", encoding="utf-8") as f:
    f.write('{"class_id": 9, "name": "torn')  # a crash mid-line
  with Store(path) as db:
    assert db.replay_journal() == 1  # the other space's line and the torn one are skipped
    assert db.evaluations()[7].metrics == {"validation_accuracy": 0.507, "train_loss": 0.125}
    assert db.replay_journal() == 0
    assert len(db.evaluations()) == len(committed) + 1


def _tiny_config():
  config = quickstart.get_config("smoke")
  config.search.unary = ("zero", "identity", "relu", "tanh")
  config.search.binary = ("add", "max")
  return config


def test_recover_mode_rebuilds_the_workdirs_store(tmp_path):
  config = _tiny_config()
  workdir = str(tmp_path)
  path = search.store_path(workdir)
  classes = search.space_classes(config)
  with Store(path) as db:
    db.init_space(config.search.space, classes)
    search.check_recipe(db, config)
    for i in range(len(classes)):
      db.record(_evaluation(i))
    committed = db.evaluations()
  _checkpoint(path)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  config.mode = "recover"
  text = modes.run(config, workdir)
  assert f"{len(classes)} evaluations from the journal" in text
  with Store(path) as db:
    assert all(_same(db.evaluations()[i], committed[i]) for i in committed)
    search.check_recipe(db, config)  # the recipe came back too
  assert "is intact; 0 evaluations replayed" in modes.run(config, workdir)
  other = _tiny_config()
  other.search.unary = ("zero", "identity", "relu", "sigmoid")  # another space
  other.mode = "recover"
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(StoreError, match="another search space"):
    modes.run(other, workdir)
  assert recovery.is_damaged(path)  # refused: nothing was moved
