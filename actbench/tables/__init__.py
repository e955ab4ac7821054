"""Act-Bench benchmark tables: the published files and the tables actbench builds.

    from actbench import tables
    tables.download("cnn")                 # once: about 130 MB into ~/.cache/actbench
    table = tables.load("cnn")             # parsed once, then from a columnar cache
    table.accuracy("validation")[table.index("relu(x)")]
    table.curve("validation", "accuracy")  # learning curves, in the tables actbench builds

`read` and `write` stream the JSON format (METHOD.md section 5) entry by entry.
"""

from actbench.tables.cache import load
from actbench.tables.download import BENCHMARKS, DownloadError, download
from actbench.tables.table import CURVE_KEYS, METRIC_KEYS, BenchmarkError, Table, read, write

__all__ = [
    "BENCHMARKS", "BenchmarkError", "CURVE_KEYS", "DownloadError", "METRIC_KEYS", "Table",
    "download", "load", "read", "write",
]
