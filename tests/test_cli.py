"""The launcher's answer to a user's mistake: one clear message and a non-zero exit, before any
work, for every unknown field, wrong type, bad mode and bad name, in a config file or on the
command line (fuzzed over every field of configs/common.py)."""

import os
import subprocess
import sys

import ml_collections
import pytest

from actbench import defaults
from actbench import main as launcher
from actbench import modes
from configs import common, quickstart

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ml_collections loads config files with importlib's deprecated load_module().
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


def _leaves(config, prefix=""):
  for key in config.keys():
    value = config[key]
    path = f"{prefix}{key}"
    if path in defaults.FREE_FORM:
      continue
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, path + ".")
    else:
      yield path, value


LEAVES = dict(_leaves(common.base_config()))
SECTIONS = [key for key in common.base_config().keys()
            if isinstance(common.base_config()[key], ml_collections.ConfigDict)]


def _typo(path: str) -> str:
  """The path with its last name misspelt (a letter dropped), never another field."""
  head, _, name = path.rpartition(".")
  for i in range(len(name)):
    wrong = name[:i] + name[i + 1:]
    full = f"{head}.{wrong}" if head else wrong
    if wrong and full not in LEAVES and wrong not in SECTIONS:
      return full
  return path + "x"


def _wrong_value(value):
  """A command-line value of the wrong kind for a field with default `value`, or None."""
  if isinstance(value, bool):
    return "perhaps"
  if isinstance(value, (int, float)):
    return "many"
  return None


BAD_NAMES = {
    "mode": "serch", "dataset.name": "cifar01", "model.name": "resnet5",
    "train.optimizer": "adamm", "train.schedule": "cosin", "train.loss": "softmax",
    "population.strategy": "pmap", "fisher.method": "kfak", "fisher.type": "empiric",
    "fisher.eigenvalues": "gpu",
    "search.strategy": "aquasurff", "surrogate.features": "unoin",
    "model.dtype": "bfloat", "model.conv_implementation": "im2col2",
    "train.weight_decay_on": "kernel", "search.space": "binary(unary(x)",
    "activations": "('relu(x)','rleu(x)')", "search.baselines": "('tanh(x',)",
    "search.unary": "('relu','nope')", "replay.strategies": "('random','evo')",
}
# The bad element of the sequences above, which their message must name (the others name
# the whole value).
BAD_ELEMENTS = {"activations": "rleu", "search.baselines": "tanh(x", "search.unary": "nope",
                "replay.strategies": "evo"}


SMOKE = "--config=configs/quickstart.py:smoke"


def _config_file(tmp_path, name: str, line: str) -> str:
  path = tmp_path / f"{name}.py"
  path.write_text("from configs import quickstart\n\n\ndef get_config():\n"
                  f"  config = quickstart.get_config('smoke')\n  {line}\n  return config\n")
  return f"--config={path}"


def _cases(tmp_path):
  """(description, argv, what the message must name) of every malformed config and command
  line tried: the field as it was written and the closest known one, or the bad value."""
  cases = []
  for index, (path, value) in enumerate(LEAVES.items()):
    typo, name = _typo(path), path.rpartition(".")[2]
    cases.append((f"--config.{typo}", [SMOKE, f"--config.{typo}=1"],
                  [f"--config.{typo}: ", f"(did you mean --config.{path}?)"]))
    cases.append((f"file: config.{typo}",
                  [_config_file(tmp_path, f"typo{index}", f"config.{typo} = 1")],
                  [f"config.{typo} is not a field", f"(did you mean '{name}'?"]))
    wrong = _wrong_value(value)
    if wrong is not None:
      cases.append((f"--config.{path}={wrong}", [SMOKE, f"--config.{path}={wrong}"],
                    [f"--config.{path}={wrong}: "]))
      # ml_collections names only the field's last name ('seed' of config.seed and of
      # config.fisher.seed alike); the file and line tell which.
      config_file = _config_file(tmp_path, f"type{index}", f"config.{path} = {wrong!r}")
      cases.append((f"file: config.{path} = {wrong!r}", [config_file],
                    [f"{config_file[len('--config='):]}, line 6: ",
                     f"field '{name}'", f"{wrong} is of original type"]))
  for section in SECTIONS:
    cases.append((f"--config.{section}x.field", [SMOKE, f"--config.{section}x.field=1"],
                  [f"config has no field '{section}x'", f"(did you mean --config.{section}?)"]))
  for path, bad in BAD_NAMES.items():
    cases.append((f"--config.{path}={bad}", [SMOKE, f"--config.{path}={bad}"],
                  [f"config.{path}", repr(BAD_ELEMENTS.get(path, bad))]))
  cases += [("a missing config file", ["--config=configs/nope.py"], ["configs/nope.py"]),
            ("a bad config argument", ["--config=configs/quickstart.py:bogus"],
             ["configs/quickstart.py", "'bogus'"]),
            ("no --config", [], ["--config is required"]),
            ("a stray argument", [SMOKE, "stray"], ["['stray']"])]
  return cases


def test_every_malformed_config_and_command_line_is_one_clear_error(tmp_path, monkeypatch):
  def no_work(config, workdir):
    raise AssertionError("a malformed config reached the run")
  monkeypatch.setattr(modes, "run", no_work)
  cases = _cases(tmp_path)
  unclear = []
  for description, argv, names in cases:
    try:
      launcher.launch(["actbench"] + argv + [f"--workdir={tmp_path / 'work'}"])
      unclear.append((description, "no error"))
    except launcher.UserError as e:
      message = str(e)
      missing = [name for name in names if name not in message]
      if e.status != 2 or "Traceback" in message or missing:
        unclear.append((description, e.status, message, missing))
    except Exception as e:  # pylint: disable=broad-except  # anything else is unclear
      unclear.append((description, type(e).__name__, str(e)[:200]))
  assert len(cases) > 250
  assert not unclear, unclear[:5]
  assert not os.path.exists(tmp_path / "work")  # nothing was written


def test_messages_name_the_field_and_the_closest_known_one(tmp_path):
  with pytest.raises(launcher.UserError, match=r"--config.train.learnig_rate: config.train has "
                     r"no field 'learnig_rate' \(did you mean --config.train.learning_rate\?\)"):
    launcher.launch(["actbench", "--config=configs/quickstart.py",
                     "--config.train.learnig_rate=3"])
  config_file = tmp_path / "mine.py"
  config_file.write_text("from configs import quickstart\n\ndef get_config():\n"
                         "  config = quickstart.get_config()\n"
                         "  config.search.budjet = 5\n  return config\n")
  with pytest.raises(launcher.UserError, match=r"config.search.budjet is not a field \(did you "
                     r"mean 'budget'\?"):
    launcher.launch(["actbench", f"--config={config_file}"])
  config_file.write_text("from configs import quickstart\n\ndef get_config():\n"
                         "  config = quickstart.get_config()\n"
                         "  config.train.num_epochs = 'ten'\n  return config\n")
  with pytest.raises(launcher.UserError, match=rf"{config_file}, line 5: TypeError: Could not "
                     "override field 'num_epochs'"):
    launcher.launch(["actbench", f"--config={config_file}"])
  with pytest.raises(launcher.UserError, match=r"config.search.strategy = 'aquasurff' is not one "
                     r"of .* \(did you mean 'aquasurf'\?\)"):
    launcher.launch(["actbench", "--config=configs/quickstart.py",
                     "--config.search.strategy=aquasurff"])


def test_an_unwritable_workdir_is_found_before_any_work(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(launcher.UserError, match="cannot be made: .*a_file is a file") as error:
    launcher.launch(["actbench", "--config=configs/quickstart.py:train",
                     f"--workdir={blocker / 'work'}"])
  assert error.value.status == 1
  with pytest.raises(modes.WorkdirError, match="needs --workdir"):
    modes.run(quickstart.get_config(), None)


@pytest.mark.slow
def test_the_command_prints_one_line_and_the_traceback_only_when_asked():
  env = dict(os.environ, PYTHONPATH=ROOT)
  args = [sys.executable, "-m", "actbench.main", "--config=configs/quickstart.py",
          "--config.train.learnig_rate=3"]
  quiet = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert quiet.returncode == 2 and quiet.stdout == ""
  assert quiet.stderr.strip().splitlines() == [
      "actbench: error: --config.train.learnig_rate: config.train has no field 'learnig_rate' "
      "(did you mean --config.train.learning_rate?) (--verbosity=1 shows the traceback)"]
  loud = subprocess.run(args + ["--verbosity=1"], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  assert loud.returncode == 2 and "Traceback (most recent call last)" in loud.stderr
