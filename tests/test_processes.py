"""Whether a process of this machine is alive: how killed workers and preparations are found."""

import os
import subprocess
import sys

from actbench import processes


def test_a_running_process_is_alive_and_an_ended_one_is_not():
  assert processes.pid_alive(os.getpid())
  child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
  try:
    assert processes.pid_alive(child.pid)
  finally:
    child.kill()
    child.wait()  # reaped: the id names no process any more
  assert not processes.pid_alive(child.pid)
