"""TensorBoard event files of a run (search, benchmark or training), written without TensorFlow.

    log = events.EventLog(os.path.join(workdir, "tensorboard"), enabled=jax.process_index() == 0)
    log.epoch(names, epoch, {"train_loss": losses, "validation_accuracy": accuracies})
    log.round(round_number, best=0.97, evaluated=16, failed=1)
    log.image("search/surrogate_map", os.path.join(workdir, "surrogate_map.png"), round_number)
    log.flush()   # at the end of each round

    tensorboard --logdir WORKDIR/tensorboard

The records are tensorboardX's protocol buffers in TensorBoard's record format, written by the
calling thread to one buffered file. tensorboardX's own SummaryWriter is not used: its
background thread takes events through a bounded multiprocessing queue, so a write error would
die in that thread, unseen, and the next writes would block on the full queue; here an OSError
is caught where it happens, logged once, and the log goes quiet. Nothing here ever raises for
a full disk or an unwritable folder: logging must not end a search.

Tags (a function's expression is its own tag segment, unchanged):
  functions/<name>/<metric>            per epoch (step = epoch, from 1): median over seeds
  functions/<name>/fold<f>/<metric>    the same for one cross-validation fold (folds restart
                                       at epoch 1, so each has tags of its own)
  search/<figure>                      per round (step = the round number the caller gives)

A process restarted on the same folder (preemption) opens a new file beside the old ones (its
name starts with the time, then host and pid, so files sort in the order they were written).
TensorBoard reads a folder's files as one run, and its data server drops a tag's points at and
after a step that comes again (its reservoir takes it for a restart), so epochs trained again
after a restart take the place of the first attempt's. The same rule means that processes
writing one tag must not interleave their steps: workers sharing a workdir should each log to
a folder of their own.

Cost: records are buffered in memory and reach the disk at flush() (an fsync), at close(), and
at the first write after `flush_secs` without one, so that a long epoch's values show up while
the run goes on.
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import struct
import time
from collections.abc import Mapping, Sequence

from absl import logging

from actbench.engine.results import summed_over_runs

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> channels (the Summary.Image colorspace): grey, RGB, palette, grey + alpha,
# RGBA.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
_ROUND_TAGS = {"best": "search/best_validation_accuracy", "evaluated": "search/evaluated",
               "failed": "search/failed", "stopped": "search/stopped",
               "model_epochs_per_s": "search/model_epochs_per_s",
               "surrogate_spearman": "search/surrogate_loo_spearman"}
TOP_COLUMNS = ("rank", "activation", "validation %", "test %", "stopped at epoch", "failed")
# What epoch() writes of a training record by default: the loss the optimizer sees and the
# accuracy the search ranks by.
EPOCH_METRICS = ("train_loss", "validation_accuracy")
_files = itertools.count()  # two logs of one process opened within a second get two files


def median_over_seeds(values: Sequence[float], seeds: Sequence[int]) -> float:
  """One function's figure from its runs, as PopulationResult.by_activation sums a curve up
  (results.summed_over_runs): each seed's mean over its runs (folds), then the median over
  seeds, ignoring NaN; NaN when no run has a finite value."""
  return summed_over_runs("", values, [False] * len(values), seeds, list(dict.fromkeys(seeds)))


def png_size(png: bytes) -> tuple[int, int, int]:
  """(height, width, channels) from a PNG's header; ValueError if it is not a PNG."""
  if len(png) < 26 or not png.startswith(_PNG_SIGNATURE) or png[12:16] != b"IHDR":
    raise ValueError("not a PNG file")
  width, height = struct.unpack(">II", png[16:24])
  return height, width, _PNG_CHANNELS.get(png[25], 3)


def top_table(rows: Sequence[Mapping], count: int = 10) -> str:
  """The first `count` leaderboard rows (report.leaderboard's dicts) as a Markdown table."""
  lines = ["| " + " | ".join(TOP_COLUMNS) + " |", "|" + "---|" * len(TOP_COLUMNS)]
  for row in rows[:count]:
    stopped = row.get("stopped_at_epoch", "")
    cells = (str(row.get("rank", "")), f"`{row.get('activation', '')}`",
             _percent(row.get("validation_accuracy")), _percent(row.get("test_accuracy")),
             "" if stopped in ("", None) else str(stopped), "yes" if row.get("diverged") else "")
    lines.append("| " + " | ".join(cells) + " |")
  if len(rows) > count:
    lines.append(f"\n{len(rows) - count} more in leaderboard.csv")
  return "\n".join(lines)


def _percent(value) -> str:
  return f"{100 * value:.2f}" if _finite(value) else "-"


def _finite(value) -> bool:
  try:
    return value is not None and math.isfinite(float(value))
  except (TypeError, ValueError):
    return False


def config_text(config) -> str:
  """A ConfigDict as a fenced YAML block: its str() (to_yaml() would spell out every internal
  field of ConfigDict), less the tuple tags that only PyYAML reads."""
  return "```yaml\n" + str(config).replace(" !!python/tuple", "").rstrip() + "\n```"


class EventLog:
  """Scalars, images and text of one run in one folder (e.g. <workdir>/tensorboard/).

  With enabled=False (processes other than 0, or the config turns it off) every method does
  nothing. The file is opened at the first write, so a run that writes nothing leaves none.
  Usable as a context manager (closes on exit).
  """

  def __init__(self, logdir: str, *, enabled: bool = True, flush_secs: float = 30.0):
    self.logdir = logdir
    self.enabled = bool(enabled)
    self.flush_secs = flush_secs
    self.path: str | None = None  # the event file, once opened
    self._record_writer = None
    self._protos = None
    self._last_flush = time.monotonic()

  def __enter__(self) -> EventLog:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  # --- What a run writes -------------------------------------------------------------------

  def epoch(self, names: Sequence[str], epoch: int, values: Mapping[str, Sequence[float]], *,
            fold: int | None = None, seeds: Sequence[int] | None = None,
            metrics: Sequence[str] = EPOCH_METRICS) -> None:
    """One epoch of a population: per function and metric, the median over its seeds.

    Args:
      names: a function per run (a name repeats once per seed).
      epoch: the epoch just finished, from 1: the step.
      values: metric -> a value per run, in the order of `names` (e.g. train.py's per-epoch
        record; its other entries, such as "diverged", are not metrics and are ignored).
      fold: the cross-validation fold these runs trained on, if any: it goes into the tag.
      seeds: each run's seed; runs of one function and seed are averaged first (as
        by_activation averages folds). None: every run is a seed of its own.
      metrics: the entries of `values` written (those it lacks, e.g. validation figures of
        data without a validation split, are skipped).

    A function none of whose runs has a finite value (every seed diverged), or whose median is
    not finite, gets no point that epoch.
    """
    if not self.enabled:
      return
    columns = {metric: values[metric] for metric in metrics if metric in values}
    for metric, column in columns.items():
      if len(column) != len(names):
        raise ValueError(f"{metric}: {len(column)} values for {len(names)} runs")
    if seeds is not None and len(seeds) != len(names):
      raise ValueError(f"{len(seeds)} seeds for {len(names)} runs")
    runs: dict[str, list[int]] = {}
    for index, name in enumerate(names):
      runs.setdefault(name, []).append(index)
    prefix = "" if fold is None else f"fold{int(fold)}/"
    scalars = {}
    for name, indices in runs.items():
      run_seeds = indices if seeds is None else [seeds[i] for i in indices]
      for metric, column in columns.items():
        value = median_over_seeds([column[i] for i in indices], run_seeds)
        if math.isfinite(value):
          scalars[f"functions/{name}/{prefix}{metric}"] = value
    self.scalars(scalars, epoch)

  def round(self, step: int, *, best: float, evaluated: int, failed: int, stopped: int = 0,
            model_epochs_per_s: float | None = None,
            surrogate_spearman: float | None = None) -> None:
    """A search round's figures at `step` (the caller's: report/live.py gives the number of
    functions evaluated, which goes on across restarts and workers); a figure that is None or
    not finite is left out."""
    figures = {"best": best, "evaluated": evaluated, "failed": failed, "stopped": stopped,
               "model_epochs_per_s": model_epochs_per_s,
               "surrogate_spearman": surrogate_spearman}
    self.scalars({_ROUND_TAGS[key]: value for key, value in figures.items()
                  if _finite(value)}, step)

  def scalars(self, values: Mapping[str, float], step: int) -> None:
    """Any scalars at one step, in one event; non-finite values are left out."""
    if not self.enabled:
      return
    protos = self._summary_protos()
    if protos is None:
      return
    summary = protos.Summary(value=[protos.Summary.Value(tag=tag, simple_value=float(value))
                                    for tag, value in values.items() if _finite(value)])
    if summary.value:
      self._write(summary, step)

  def image(self, tag: str, png: str | bytes, step: int) -> None:
    """A PNG figure, from its bytes or its file (a missing or unreadable file, or one that is
    not a PNG, is skipped with a log line: figures are optional)."""
    if not self.enabled:
      return
    try:
      if isinstance(png, (str, os.PathLike)):
        with open(png, "rb") as f:
          png = f.read()
      height, width, channels = png_size(png)
    except (OSError, ValueError) as error:
      logging.info("TensorBoard image %s skipped: %s", tag, error)
      return
    protos = self._summary_protos()
    if protos is None:
      return
    picture = protos.Summary.Image(height=height, width=width, colorspace=channels,
                                   encoded_image_string=bytes(png))
    self._write(protos.Summary(value=[protos.Summary.Value(tag=tag, image=picture)]), step)

  def text(self, tag: str, markdown: str, step: int) -> None:
    """Markdown for TensorBoard's Text tab (tables and fenced code render)."""
    if not self.enabled:
      return
    protos = self._summary_protos()
    if protos is None:
      return
    # The text plugin's format: a string tensor tagged with the plugin's name.
    metadata = protos.SummaryMetadata(plugin_data=protos.SummaryMetadata.PluginData(
        plugin_name="text", content=protos.TextPluginData(version=0).SerializeToString()))
    tensor = protos.TensorProto(dtype=protos.DT_STRING, string_val=[markdown.encode("utf-8")],
                                tensor_shape=protos.TensorShapeProto())
    self._write(protos.Summary(value=[protos.Summary.Value(tag=tag, metadata=metadata,
                                                           tensor=tensor)]), step)

  def config(self, config) -> None:
    """The run's config (an ml_collections ConfigDict) as text "config", at step 0."""
    if self.enabled:
      self.text("config", config_text(config), 0)

  def top(self, rows: list[dict], step: int, count: int = 10) -> None:
    """The leaderboard's first `count` rows as a Markdown table, text "search/top10"."""
    if self.enabled:
      self.text(f"search/top{count}", top_table(rows, count), step)

  def flush(self) -> None:
    """Writes what is buffered to disk (call it at the end of each round)."""
    if self._record_writer is not None:
      try:
        self._record_writer.flush()
      except OSError as error:
        self._fail(error)
    self._last_flush = time.monotonic()

  def close(self) -> None:
    """Flushes and closes the file; later writes go to a new file."""
    self.flush()
    writer, self._record_writer = self._record_writer, None  # None if the flush failed
    if writer is not None:
      try:
        writer.close()
      except OSError as error:
        self._fail(error)

  # --- Plumbing ----------------------------------------------------------------------------

  def _summary_protos(self):
    """tensorboardX's protocol buffer classes, imported at the first write (about 0.3 s, so a
    disabled log never pays it); None once the log is disabled."""
    if self._protos is None and self.enabled:
      try:
        self._protos = _Protos()
      except ImportError as error:  # a broken install: the run itself can still go on
        self._fail(error)
    return self._protos if self.enabled else None

  def _write(self, summary, step: int) -> None:
    event = self._protos.Event(wall_time=time.time(), step=int(step), summary=summary)
    try:
      if self._record_writer is None:
        self._record_writer = self._open()
      self._record_writer.write(event.SerializeToString())
      if time.monotonic() - self._last_flush >= self.flush_secs:
        self.flush()
    except OSError as error:
      self._fail(error)

  def _open(self):
    from tensorboardX import record_writer  # pylint: disable=import-outside-toplevel
    os.makedirs(self.logdir, exist_ok=True)
    # events.out.tfevents.<time> is the name TensorBoard looks for; host, pid and a counter
    # keep processes (several workers on one host) and logs of one process apart.
    self.path = os.path.join(
        self.logdir, f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
        f"{os.getpid()}.{next(_files)}")
    writer = record_writer.RecordWriter(self.path)
    header = self._protos.Event(wall_time=time.time(), file_version="brain.Event:2")
    writer.write(header.SerializeToString())
    self._last_flush = time.monotonic()
    return writer

  def _fail(self, error: Exception) -> None:
    """Logs the first error and turns the log off: the run goes on without it."""
    if self.enabled:
      logging.warning("TensorBoard events in %s turned off: %s: %s", self.logdir,
                      type(error).__name__, error)
    self.enabled = False
    writer, self._record_writer = self._record_writer, None
    if writer is not None:
      try:
        writer.close()
      except OSError:
        pass  # the error that matters is logged above


class _Protos:
  """The protocol buffer classes the log writes, from tensorboardX (no TensorFlow)."""

  def __init__(self):
    # pylint: disable=import-outside-toplevel
    from tensorboardX.proto import (event_pb2, plugin_text_pb2, summary_pb2, tensor_pb2,
                                    tensor_shape_pb2, types_pb2)
    self.Event = event_pb2.Event
    self.Summary = summary_pb2.Summary
    self.SummaryMetadata = summary_pb2.SummaryMetadata
    self.TextPluginData = plugin_text_pb2.TextPluginData
    self.TensorProto = tensor_pb2.TensorProto
    self.TensorShapeProto = tensor_shape_pb2.TensorShapeProto
    self.DT_STRING = types_pb2.DT_STRING
