"""What workers sharing a store need: names, claims kept alive, a pod's one decision.

Every process of a search is a worker with a name in the store (`default_worker`); the classes
it claims stay its own while `heartbeat` renews them; a pod's processes train one population,
so process 0 decides and `broadcast_ids` gives its decision to every process.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import threading
import _thread

from absl import logging
import jax
import numpy as np

from actbench import processes
from actbench.search import store as store_lib

SET_ASIDE = "search.set-aside.jsonl"  # results of classes another worker recorded first


def progress_bar(iterable=None, **kwargs):
  """A tqdm bar on process 0 (ETA included); silent elsewhere and when disabled."""
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  disable = kwargs.pop("disable", False) or jax.process_index() != 0
  return tqdm(iterable, disable=disable, dynamic_ncols=True, **kwargs)


def broadcast_ids(ids: list[int], size: int) -> list[int]:
  """Process 0's class ids, on every process (multi-host pods train one population)."""
  if jax.process_count() == 1:
    return ids
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  padded = np.full(size, -1, np.int64)
  padded[:len(ids)] = ids
  padded = multihost_utils.broadcast_one_to_all(padded)
  return [int(i) for i in np.asarray(padded) if i >= 0]


def default_worker() -> str:
  """This process's name in the store: host, JAX process index and pid, so that every process
  is a worker of its own (two searches on one host never share claims or checkpoints)."""
  return f"{socket.gethostname()}:p{jax.process_index()}:pid{os.getpid()}"


_DEFAULT_WORKER = re.compile(r"(?P<host>.+):p\d+:pid(?P<pid>\d+)")


def is_dead_worker(worker: str) -> bool:
  """Whether `worker` is a default-named worker of this host whose process has ended (a killed
  search): its claims are taken over at once instead of after config.search.claim_ttl_s."""
  match = _DEFAULT_WORKER.fullmatch(worker)
  return bool(match and match["host"] == socket.gethostname()
              and not processes.pid_alive(int(match["pid"])))


@contextlib.contextmanager
def heartbeat(db: store_lib.SearchStore | None, worker: str, ttl: float,
               held: set[tuple[str, int]]):
  """Keeps this worker's claims (`held`: (task, class id) pairs) alive while it works (a
  population may outlast the claim time-to-live); a killed worker stops beating and its
  claims expire. Its own connection: connections belong to one thread.

  A heartbeat that fails (the store refused, or unreachable for config.search.store_retry_s)
  stops the work with a StoreError saying so: the claims would expire and another worker
  redo the work. Claims another worker took over while this one was cut off are logged once:
  whichever result is recorded first stays, the other is kept aside."""
  if db is None:
    yield
    return
  stop, failures = threading.Event(), []

  def beat():
    warned = False
    try:
      with db.reopen() as own:
        while not stop.wait(max(ttl / 3, 1.0)):
          lost = held - own.heartbeat(worker, ttl)
          if lost and not warned:
            logging.warning("%d claims of this worker (%s) were taken over while it was cut "
                            "off: the first result recorded for each class stays, the other "
                            "goes to %s", len(lost), worker, SET_ASIDE)
            warned = True
    except BaseException as e:  # pylint: disable=broad-except  # reported in the main thread
      failures.append(e)
      if not stop.is_set():
        _thread.interrupt_main()

  thread = threading.Thread(target=beat, daemon=True, name="actbench-heartbeat")
  with _interruptible():
    thread.start()
    try:
      yield
    except KeyboardInterrupt as e:
      if failures:
        raise store_lib.StoreError(
            f"stopped: the heartbeat that keeps this worker's claims alive failed "
            f"({failures[0]}); its classes are trained again by the next run, or by another "
            "worker once the claims expire") from e
      raise
    finally:
      stop.set()
      thread.join()


@contextlib.contextmanager
def _interruptible():
  """SIGINT raises KeyboardInterrupt in the main thread meanwhile, as `interrupt_main` needs:
  a job started in the background by a shell (`nohup ... &`, a batch script) inherits SIGINT
  ignored, and a failed heartbeat would then stop nothing."""
  if (threading.current_thread() is not threading.main_thread()
      or callable(signal.getsignal(signal.SIGINT))):
    yield
    return
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
