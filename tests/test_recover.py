"""A damaged store loses no evaluation: the journal beside it, `--config.mode=recover`, and the
replay of journaled results a killed process never committed."""

import glob
import logging
import math
import os
import random
import sqlite3

import numpy as np
import pytest

from actbench import modes, search
from actbench.search import journal, recovery
from actbench.search.store import DamagedStoreError, Evaluation, Store, StoreError
from configs import quickstart

SCHEMA = "binary(unary(x),unary(x))"


def _classes(n):
  return [[f"add(u{i}(x),relu(x))", f"add(relu(x),u{i}(x))"] for i in range(n)]


def _evaluation(i):
  status = "failed" if i % 7 == 3 else "ok"
  accuracy = math.nan if status == "failed" else 0.5 + i / 1000
  return Evaluation(i, status, {"validation_accuracy": accuracy, "train_loss": 1.0 / (i + 1)},
                    [{"seed": 0, "validation_accuracy": accuracy}], 3.0 + i, "w", 1e9 + i)


def _build(path, n=300, evaluated=120, fingerprints=(("recipe", "r1"),)):
  """A store of n classes, `evaluated` of them recorded, with output features; returns the
  evaluations and feature rows as they were committed."""
  rows = np.random.default_rng(0).normal(size=(n, 64)).astype(np.float32)
  with Store(path) as db:
    db.init_space(SCHEMA, _classes(n))
    for key, value in fingerprints:
      db.set_meta(key, value)
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
  db = sqlite3.connect(path)
  db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
  db.close()


def _damage_and_recover(path, seed) -> tuple[bool, int]:
  """Damages a fresh store at a random offset and checks that no committed evaluation is
  lost; returns whether the damage was refused (and the store rebuilt) and how many feature
  rows the rebuilt store kept."""
  committed, rows = _build(path)
  _checkpoint(path)
  _damage(path, random.Random(seed))
  if not recovery.is_damaged(path):  # the damage hit unused space: nothing is lost
    with Store(path) as db:
      assert all(_same(db.evaluations()[i], committed[i]) for i in committed)
    return False, 0
  with pytest.raises(StoreError, match="--config.mode=recover"):
    Store(path)
  report = recovery.rebuild(path, SCHEMA, _classes(300))
  assert os.path.exists(report["moved_to"])
  with Store(path) as db:  # intact again
    recovered = db.evaluations()
    assert list(recovered) == list(committed)  # every one, in the recorded order
    assert all(_same(recovered[i], committed[i]) for i in committed)
    kept, present = db.features("outputs")
    if present.any():  # what was read is right (a truncation may leave no row at all)
      np.testing.assert_array_equal(kept[present], rows[present])
  assert report["from_journal"] == len(committed)
  return True, int(present.sum())


def test_every_committed_evaluation_survives_damage_at_a_random_offset(tmp_path):
  outcomes = {}
  for seed in range(8):
    os.mkdir(tmp_path / str(seed))
    try:
      outcomes[seed] = _damage_and_recover(str(tmp_path / str(seed) / "search.sqlite"), seed)
    except AssertionError as e:
      raise AssertionError(f"damage of seed {seed}: {e}") from e
  # Not vacuous: most seeds damage used pages (the store is rebuilt), and some rebuilt store
  # kept feature rows for the check above to compare.
  assert sum(damaged for damaged, _ in outcomes.values()) >= 4, outcomes
  assert any(kept > 0 for _, kept in outcomes.values()), outcomes


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
    assert present.any()  # the features come before the evaluations in the file
    np.testing.assert_array_equal(kept[present], rows[present])
  assert journal.read(journal.path_of(path))  # the rebuilt store journals them again


def test_a_journaled_result_never_committed_is_replayed(tmp_path):
  path = str(tmp_path / "search.sqlite")
  committed, _ = _build(path, evaluated=5)
  lost = _evaluation(7)  # journaled, then the process died before the commit
  journal.append(journal.path_of(path), {
      "class_id": 7, "name": _classes(300)[7][0], "status": lost.status,
      "metrics": '{"validation_accuracy": 0.507, "train_loss": 0.125}',
      "per_seed": "[]", "runtime_s": 10.0, "worker": "w", "finished_at": 2e9,
      "recipe": "r1"})  # the store's fingerprint: a line without any is not replayed
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


def _searched_then_damaged(workdir):
  """A workdir whose store recorded every class of the tiny space, then lost its second half;
  returns the recover config, the store's path and the evaluations committed."""
  config = _tiny_config()
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
  return config, path, committed


def test_recover_mode_rebuilds_the_workdirs_store(tmp_path):
  workdir = str(tmp_path)
  config, path, committed = _searched_then_damaged(workdir)
  text = modes.run(config, workdir)
  assert f"{len(committed)} evaluations from the journal" in text
  with Store(path) as db:
    assert all(_same(db.evaluations()[i], committed[i]) for i in committed)
  assert "is intact; 0 evaluations replayed" in modes.run(config, workdir)
  other = _tiny_config()
  other.search.unary = ("zero", "identity", "relu", "sigmoid")  # another space
  other.mode = "recover"
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(StoreError, match="another search space"):
    modes.run(other, workdir)
  assert recovery.is_damaged(path)  # refused: nothing was moved


def test_the_recovered_store_keeps_the_recipe_of_its_results(tmp_path):
  workdir = str(tmp_path)
  config, path, _ = _searched_then_damaged(workdir)
  modes.run(config, workdir)
  with Store(path) as db:
    assert db.get_meta("recipe") == search.recipe_fingerprint(config)
  another = _tiny_config()
  another.train.learning_rate *= 2
  with Store(path) as db, pytest.raises(StoreError, match="another training recipe"):
    search.check_recipe(db, another)  # results of two recipes are never mixed


def test_recovery_refuses_a_journal_of_another_recipe_even_when_the_file_lost_its_own(tmp_path):
  workdir = str(tmp_path)
  config, path, _ = _searched_then_damaged(workdir)
  recorded = {record["recipe"] for record in journal.read(journal.path_of(path))}
  assert recorded == {search.recipe_fingerprint(config)}  # every journal line names its recipe
  with open(path, "r+b") as f:
    f.truncate(1024)  # nothing left of the file, its meta records included
  assert not recovery.salvage(path).meta
  another = _tiny_config()
  another.train.learning_rate *= 2
  another.mode = "recover"
  with pytest.raises(StoreError, match="another training recipe"):
    modes.run(another, workdir)
  assert recovery.is_damaged(path)  # refused: nothing was moved
  modes.run(config, workdir)
  with Store(path) as db:
    assert db.get_meta("recipe") == search.recipe_fingerprint(config)


def _damage_table(path, table):
  """Overwrites the root page of one table (found in the schema), leaving every other page as
  it was: the whole table becomes unreadable, the rest of the file stays readable."""
  _checkpoint(path)
  db = sqlite3.connect(path)
  (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
  (page,) = db.execute("PRAGMA page_size").fetchone()
  db.close()
  assert root > 1  # not sqlite_master itself
  with open(path, "r+b") as f:
    f.seek((root - 1) * page)
    f.write(bytes(random.Random(root).randrange(256) for _ in range(page)))


def _lose_space_digest(path):
  """The meta record of the space's digest removed, as if its cell had been damaged."""
  db = sqlite3.connect(path)
  with db:
    db.execute("DELETE FROM meta WHERE key = 'store.space_digest'")
  db.close()


def test_an_unreadable_classes_table_with_an_intact_journal_rebuilds_every_evaluation(tmp_path):
  path = str(tmp_path / "search.sqlite")
  committed, _ = _build(path)
  _damage_table(path, "classes")
  with pytest.raises(DamagedStoreError):
    Store(path)
  found = recovery.salvage(path)
  # Not vacuous: the file's rows are there, without names (they used to refuse the rebuild
  # as "another search space").
  assert found.names == {} and len(found.evaluations) == len(committed)
  assert all(row["name"] is None for row in found.evaluations)
  report = recovery.rebuild(path, SCHEMA, _classes(300), recipe="r1")
  assert report["from_journal"] == len(committed) and report["from_file"] == 0
  assert not any(report["skipped"].values())  # the file's rows are the journal's again
  with Store(path) as db:
    recovered = db.evaluations()
    assert list(recovered) == list(committed)
    assert all(_same(recovered[i], committed[i]) for i in committed)
    assert db.classes() == _classes(300)


def test_without_the_journal_unnamed_rows_are_kept_when_the_files_space_digest_matches(tmp_path):
  path = str(tmp_path / "search.sqlite")
  committed, rows = _build(path)
  os.remove(journal.path_of(path))
  _damage_table(path, "classes")
  report = recovery.rebuild(path, SCHEMA, _classes(300), recipe="r1")
  assert report["from_file"] == len(committed) and report["from_journal"] == 0
  assert not any(report["skipped"].values())
  with Store(path) as db:
    recovered = db.evaluations()
    assert list(recovered) == list(committed)
    assert all(_same(recovered[i], committed[i]) for i in committed)
    kept, present = db.features("outputs")  # the digest vouches for the features' ids too
    assert present.all()
    np.testing.assert_array_equal(kept, rows)


def test_without_the_digest_an_unnamed_row_is_kept_only_where_the_journal_names_its_class(
    tmp_path):
  path = str(tmp_path / "search.sqlite")
  committed, _ = _build(path)
  _lose_space_digest(path)
  _damage_table(path, "classes")
  lines = journal.read(journal.path_of(path))
  os.remove(journal.path_of(path))
  for line in lines[:10]:  # the journal lost all but its first ten lines...
    if line["class_id"] == 3:  # ...and one of those lost its result, but not its class name
      line = {**line, "metrics": "{damaged"}
    journal.append(journal.path_of(path), line)
  report = recovery.rebuild(path, SCHEMA, _classes(300), recipe="r1")
  assert report["from_journal"] == 9 and report["from_file"] == 1  # class 3, from the file
  assert report["skipped"]["unreadable"] == 1
  assert report["skipped"]["unnamed"] == len(committed) - 10  # nothing says what they were
  with Store(path) as db:
    recovered = db.evaluations()
    assert sorted(recovered) == list(range(10))
    assert all(_same(recovered[i], committed[i]) for i in recovered)


def _unchanged_and_not_moved(path, before: bytes) -> None:
  with open(path, "rb") as f:
    assert f.read() == before
  assert not glob.glob(path + ".damaged-*")


@pytest.mark.parametrize("kind", ["another SQLite database", "not SQLite", "a newer version"])
def test_a_foreign_or_newer_file_is_not_damage_and_is_never_moved_aside(tmp_path, kind):
  path = str(tmp_path / "search.sqlite")
  if kind == "a newer version":
    _build(path, n=20, evaluated=5)
    _checkpoint(path)
    db = sqlite3.connect(path)
    (version,) = db.execute("PRAGMA user_version").fetchone()
    db.execute(f"PRAGMA user_version = {version + 7}")
    db.close()
    expected = f"format version {version + 7}"
  elif kind == "another SQLite database":
    db = sqlite3.connect(path)
    with db:
      db.execute("CREATE TABLE notes (text TEXT)")
      db.execute("INSERT INTO notes VALUES ('mine')")
    db.close()
    expected = "not an actbench store"
  else:
    with open(path, "w", encoding="utf-8") as f:
      f.write("a text file that happens to have the store's name\n" * 100)
    expected = "not an SQLite database"
  with open(path, "rb") as f:
    before = f.read()
  assert not recovery.is_damaged(path)
  with pytest.raises(StoreError, match=expected) as refused:
    recovery.rebuild(path, SCHEMA, _classes(20), recipe="r1")
  assert not isinstance(refused.value, DamagedStoreError)
  assert f"not rebuilding {path}" in str(refused.value)
  _unchanged_and_not_moved(path, before)


def test_an_intact_store_is_not_rebuilt(tmp_path):
  path = str(tmp_path / "search.sqlite")
  _build(path, n=20, evaluated=5)
  _checkpoint(path)
  with open(path, "rb") as f:
    before = f.read()
  assert not recovery.is_damaged(path)
  with pytest.raises(StoreError, match="intact"):
    recovery.rebuild(path, SCHEMA, _classes(20), recipe="r1")
  _unchanged_and_not_moved(path, before)


def _line(i, **fingerprints):
  """A journal line of another search's result for class i (its metrics tell it apart)."""
  return {"class_id": i, "name": _classes(300)[i][0], "status": "ok",
          "metrics": '{"validation_accuracy": 0.01}', "per_seed": "[]", "runtime_s": 1.0,
          "worker": "old", "finished_at": 1.0, **fingerprints}


def test_a_journal_mixing_two_recipes_rebuilds_only_this_recipes_lines(tmp_path, caplog):
  path = str(tmp_path / "search.sqlite")
  committed, _ = _build(path)
  ours = journal.read(journal.path_of(path))
  os.remove(journal.path_of(path))
  # An earlier search of another recipe in this workdir (the same classes among them), and a
  # line of no search at all, before this search's lines.
  theirs = [_line(i, recipe="r0") for i in (*range(20), *range(250, 260))]
  for line in (*theirs, _line(270), *ours):
    journal.append(journal.path_of(path), line)
  _checkpoint(path)
  with open(path, "r+b") as f:
    f.truncate(1024)  # the file's meta records are gone: only the lines tell searches apart
  assert not recovery.salvage(path).meta
  with pytest.raises(StoreError, match="pass recipe="):  # which of the two? never a guess
    recovery.rebuild(path, SCHEMA, _classes(300))
  assert recovery.is_damaged(path)  # refused: nothing was moved
  with caplog.at_level(logging.WARNING):
    report = recovery.rebuild(path, SCHEMA, _classes(300), recipe="r1")
  assert report["skipped"]["recipe"] == len(theirs)
  assert report["skipped"]["unattributed"] == 1
  assert report["from_journal"] == len(committed)
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1 and f"{len(theirs)} recipe" in warnings[0], warnings
  with Store(path) as db:
    recovered = db.evaluations()
    assert list(recovered) == list(committed)
    assert all(_same(recovered[i], committed[i]) for i in committed)
    assert db.get_meta("recipe") == "r1"


def test_a_journal_of_only_another_recipe_is_refused_not_rebuilt_empty(tmp_path):
  path = str(tmp_path / "search.sqlite")
  _build(path, evaluated=0)
  for i in range(20):
    journal.append(journal.path_of(path), _line(i, recipe="r0"))
  _checkpoint(path)
  with open(path, "r+b") as f:
    f.truncate(1024)
  with pytest.raises(StoreError, match="20 of another training recipe"):
    recovery.rebuild(path, SCHEMA, _classes(300), recipe="r1")
  assert recovery.is_damaged(path)  # refused: nothing was moved


def test_a_salvaged_row_without_fingerprint_is_kept_when_the_files_meta_matches(tmp_path):
  path = str(tmp_path / "search.sqlite")
  committed, _ = _build(path, fingerprints=(("recipe", "r1"), ("data", "d1"), ("model", "m1")))
  _checkpoint(path)
  os.remove(journal.path_of(path))
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size - 4096 * 3)
  found = recovery.salvage(path)
  salvaged = {row["class_id"] for row in found.evaluations}
  assert salvaged and not any(key in row for row in found.evaluations
                              for key in ("recipe", "data", "model"))  # rows carry none
  assert (found.meta["recipe"], found.meta["data"], found.meta["model"]) == ("r1", "d1", "m1")
  # A journal line without any fingerprint, for a class the file lost: not attributable.
  stray = min(set(range(300)) - salvaged)
  journal.append(journal.path_of(path), _line(stray))
  with pytest.raises(StoreError, match="other data"):  # the file's own data differ: wrong config
    recovery.rebuild(path, SCHEMA, _classes(300), recipe="r1", data="d2")
  assert recovery.is_damaged(path)
  report = recovery.rebuild(path, SCHEMA, _classes(300), recipe="r1", data="d1")
  assert report["from_file"] == len(salvaged) and report["from_journal"] == 0
  assert report["skipped"]["unattributed"] == 1
  with Store(path) as db:
    recovered = db.evaluations()
    assert set(recovered) == salvaged
    assert all(_same(recovered[i], committed[i]) for i in recovered)
    # The fingerprints of what it kept, the model's taken from the file.
    assert [db.get_meta(key) for key in ("recipe", "data", "model")] == ["r1", "d1", "m1"]


@pytest.mark.parametrize("compress, lose_codec", [(True, False), (True, True), (False, False)])
def test_compressed_feature_rows_survive_a_rebuild_bit_for_bit(tmp_path, compress, lose_codec):
  path = str(tmp_path / "store.db")
  classes = [[f"rep{i}(x)"] for i in range(40)]
  rng = np.random.default_rng(0)
  rows = np.sort(rng.choice(rng.uniform(size=80), (40, 378)), axis=1).astype(np.float32)
  rows[3] = np.nan
  with Store(path) as db:
    db.init_space("binary(unary(x),unary(x))", classes)
    db.set_meta("recipe", "r1")
    db.put_features("fisher", range(40), rows, compress=compress)
  db = sqlite3.connect(path)
  if lose_codec:  # the pages saying how the rows are stored are gone: the rows still tell
    db.execute("DELETE FROM meta WHERE key LIKE 'store.codec.%'")
    db.execute("DELETE FROM feature_kinds")
    db.commit()
  db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
  db.close()
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) - 4096)
  assert recovery.is_damaged(path)
  recovery.rebuild(path, "binary(unary(x),unary(x))", classes, recipe="r1")
  with Store(path) as db:
    values, present = db.features("fisher")
    assert db.feature_codec("fisher") == ("shuffle-zlib" if compress and not lose_codec
                                          else "raw")
  assert present.sum() >= 20  # the rows of the pages that survived
  assert np.array_equal(values[present].view(np.uint32), rows[present].view(np.uint32))
