"""Act-Bench benchmark tables: the published files and the tables actbench builds.

    from actbench import tables
    tables.download("cnn")                 # once: about 130 MB into ~/.cache/actbench
    table = tables.load("cnn")             # parsed once, then from a columnar cache
    table.accuracy("validation")[table.index("relu(x)")]

`read` and `write` stream the JSON format (METHOD.md section 5) entry by entry.
"""

from actbench.tables.cache import load
from actbench.tables.download import BENCHMARKS, DownloadError, download
from actbench.tables.table import METRIC_KEYS, BenchmarkError, Table, read, write

__all__ = [
    "BENCHMARKS", "BenchmarkError", "DownloadError", "METRIC_KEYS", "Table", "download", "load",
    "read", "write",
]
