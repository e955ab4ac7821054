"""User errors apart from bugs: the launcher prints a user's mistake (an actbench InputError)
on one line and lets any other exception keep its traceback."""

import os
import subprocess
import sys

import numpy as np
import pytest

from actbench import errors
from actbench import main as launcher
from actbench import modes, models
from actbench.engine import data, fetch, objectives, prepare, sources
from actbench.expr.expression import ExpressionError
from actbench.search.store import StoreError
from actbench.tables import BenchmarkError, DownloadError
from configs import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


def test_every_user_facing_error_is_an_input_error_and_keeps_its_builtin():
  for error, builtin in [(errors.ConfigError, ValueError), (ExpressionError, ValueError),
                         (data.DataError, ValueError), (sources.DatasetNotFoundError, ValueError),
                         (models.ModelError, ValueError), (BenchmarkError, ValueError),
                         (modes.WorkdirError, OSError), (DownloadError, OSError),
                         (fetch.FetchError, OSError), (prepare.PrepareError, OSError),
                         (StoreError, RuntimeError)]:
    assert issubclass(error, errors.InputError) and issubclass(error, builtin), error


def test_a_user_error_is_one_line_and_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
  argv = ["actbench", "--config=configs/quickstart.py:train", f"--workdir={tmp_path}"]
  monkeypatch.setattr(modes, "run", lambda config, workdir: (_ for _ in ()).throw(
      data.DataError("digits: the validation split is empty")))
  with pytest.raises(launcher.UserError, match="the validation split is empty") as error:
    launcher.launch(argv)
  assert error.value.status == 1
  # A ValueError or OSError from below (JAX, NumPy, a bug) is not the user's: it propagates.
  for bug in (ValueError("operands could not be broadcast"), OSError("[Errno 28] disk full"),
              KeyError("params")):
    monkeypatch.setattr(modes, "run", lambda config, workdir, bug=bug: (_ for _ in ()).throw(
        bug))
    with pytest.raises(type(bug)):
      launcher.launch(argv)


def _run_main(*args, cwd=ROOT):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", "actbench.main", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def test_the_launcher_prints_a_bug_with_its_traceback():
  # The launcher's own entry point, with a run that fails the way a library bug does.
  program = ("from absl import app\n"
             "from actbench import main, modes\n"
             "def run(config, workdir):\n"
             "  raise ValueError('a bug deep in a library')\n"
             "modes.run = run\n"
             "app.run(main.main, flags_parser=main._absl_flags)\n")
  process = subprocess.run([sys.executable, "-c", program, "--config=configs/quickstart.py:train"],
                           cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                           text=True, timeout=300)
  assert process.returncode == 1
  assert "Traceback" in process.stderr and "a bug deep in a library" in process.stderr
  assert "actbench: error:" not in process.stderr


def test_a_model_module_that_fails_to_import_is_a_model_error_naming_the_line(tmp_path):
  (tmp_path / "failing_model.py").write_text("import math\n\nWIDTH = math.sqrt(-1)\n")
  sys.path.insert(0, str(tmp_path))
  try:
    with pytest.raises(models.ModelError, match=r"importing module 'failing_model' failed: "
                       r".*failing_model.py, line 3: ValueError: math domain error"):
      models.resolve_model("failing_model:Model")
  finally:
    sys.path.remove(str(tmp_path))
  process = _run_main(f"--config={ROOT}/configs/quickstart.py:train",
                      "--config.model.name=failing_model:Model", cwd=tmp_path)
  assert process.returncode == 2, process.stderr[-2000:]
  assert "failing_model.py, line 3: ValueError: math domain error" in process.stderr
  assert "Traceback" not in process.stderr


def test_a_config_value_found_late_is_a_config_error():
  config = common.base_config().train
  config.label_smoothing = 1.5
  with pytest.raises(errors.ConfigError, match=r"config.train.label_smoothing must be in "
                     r"\[0.0, 1.0\], got 1.5"):
    objectives.check(config)


def test_a_damaged_npz_file_is_a_data_error(tmp_path):
  good = tmp_path / "good.npz"
  np.savez(good, x_train=np.zeros((20, 4), np.float32), y_train=np.arange(20) % 2)
  content = good.read_bytes()
  (tmp_path / "cut.npz").write_bytes(content[:len(content) // 2])  # a copy that stopped
  (tmp_path / "text.npz").write_text("x,y\n1,2\n")  # not an npz at all
  for name in ("cut.npz", "text.npz"):
    with pytest.raises(data.DataError, match=rf"{name}: not a readable .npz file"):
      data.load(f"npz:{tmp_path / name}")
