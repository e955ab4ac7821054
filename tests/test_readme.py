"""The README's own-model example runs as written, in Python and through the launcher, and both
ways find the same results."""

import contextlib
import io
import os
import re
import runpy
import subprocess
import sys

import pytest

from actbench import search
from actbench.search import store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTION = "## Search activations for your own model"


def _blocks() -> list[tuple[str, str]]:
  """(language, text) of every fenced block of the README's own-model section."""
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  section = readme[readme.index(SECTION):]
  section = section[:section.index("\n## ", len(SECTION))]
  return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def _run(command: list[str], cwd) -> str:
  env = dict(os.environ, PYTHONPATH=ROOT)  # as after `pip install -e .`, from any directory
  process = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=600)
  assert process.returncode == 0, process.stderr[-3000:]
  return process.stdout


def _results(workdir) -> dict[str, float]:
  """Validation accuracy of each evaluated function, from the search's store."""
  with store.Store(search.store_path(str(workdir))) as db:
    classes = db.classes()
    return {classes[i][0]: e.metrics["validation_accuracy"] for i, e in db.evaluations().items()}


@pytest.fixture(scope="module")
def python_run(tmp_path_factory):
  """The script run as `python search_my_model.py` would, in this process (its imports, UMAP's
  among them, are paid once for the suite)."""
  blocks = _blocks()
  cwd = tmp_path_factory.mktemp("readme_python")
  language, script = blocks[0]
  assert language == "python" and len(script.splitlines()) <= 45
  name = script.splitlines()[0].split()[1].rstrip(":")  # '# search_my_model.py: ...'
  (cwd / name).write_text(script)
  output, previous = io.StringIO(), os.getcwd()
  os.chdir(cwd)
  try:
    with contextlib.redirect_stdout(output):
      runpy.run_path(name, run_name="__main__")
  finally:
    os.chdir(previous)
  return cwd, output.getvalue()


@pytest.mark.slow
def test_the_python_script_prints_the_leaderboard(python_run):
  _, stdout = python_run
  assert "rank  validation" in stdout
  rows = [line for line in stdout.splitlines() if re.match(r"\s+\d+\s+\d", line)]
  assert len(rows) == 12  # the budget: 8 baselines and 4 picks


# Extended (CI time): the launcher's search mode is also run by test_search.py and
# test_main.py; this one checks the README's config file against its Python script.
@pytest.mark.slow
@pytest.mark.extended
def test_the_config_file_and_launcher_find_the_same(python_run, tmp_path):
  blocks = _blocks()
  for language, text in blocks[1:]:
    if language == "python":
      name = text.splitlines()[0].lstrip("# ").strip()
      (tmp_path / name).write_text(text)
  commands = [block for language, block in blocks if language == "bash"][0].strip().splitlines()
  for command in commands:
    _run(["bash", "-c", command.replace("python ", f"{sys.executable} ", 1)], tmp_path)
  # The same data (the same split), model and recipe: the same results, whichever way.
  python_dir, _ = python_run
  results = _results(tmp_path / "my_search")
  assert len(results) == 12 and results == _results(python_dir / "my_search")
  assert os.path.exists(tmp_path / "my_search" / "leaderboard.csv")
