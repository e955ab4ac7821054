"""TensorBoard event files read back as TensorBoard reads them, for the tests of
actbench/report/events.py and of a watched search (test_events.py, test_live_report.py)."""

from tensorboard.backend.event_processing import event_accumulator


def read_events(logdir) -> event_accumulator.EventAccumulator:
  """Every event file in logdir, as TensorBoard loads a run (0: keep every point)."""
  accumulator = event_accumulator.EventAccumulator(
      str(logdir), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0,
                                  event_accumulator.TENSORS: 0})
  return accumulator.Reload()


def scalar_points(accumulator, tag) -> dict[int, float]:
  """step -> value of a scalar tag."""
  return {event.step: event.value for event in accumulator.Scalars(tag)}
