"""The last stage: what a search, a benchmark or a replay leaves for people to read.

  leaderboard.py  ranked rows, the printed table, CSV and JSON (re-exported here)
  plots.py        the PNG figures of searches, benchmarks and replays
  document.py     the Markdown report of a benchmark table and its replays
  events.py       TensorBoard event files of a run (tensorboardX, no TensorFlow)
  html_page.py    report.html: one self-contained page of a search's leaderboard and figures
  live.py         both, written while a search runs (search.run's observer) or from a store

    from actbench import report
    rows = report.leaderboard(result)      # a train.PopulationResult
    print(report.format_table(rows))
"""

from actbench.report.leaderboard import (COLUMNS, format_table, leaderboard, store_leaderboard,
                                         write, write_features, write_json, write_leaderboard)

__all__ = [
    "COLUMNS", "format_table", "leaderboard", "store_leaderboard", "write", "write_features",
    "write_json", "write_leaderboard",
]
