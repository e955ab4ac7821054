"""Whether a process of this machine is still running: how a killed dataset preparation's
build directory and a killed search worker's claims are told from live ones.

This module sits below every stage: each may import it.
"""

import os


def pid_alive(pid: int) -> bool:
  """Whether a process of this machine with this id is running."""
  if os.name != "posix":  # os.kill would end the process there: assume it is alive
    return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True
