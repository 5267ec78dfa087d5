"""Run results in HDF5: a streaming writer for rank 0 and a reader/summary for tools; tidy tables,
run comparisons and (in :mod:`mpicomp.results.plot`, with matplotlib) figures of several runs.

Layout and guarantees: ``docs/results-format.md``.
"""

from .collect import RunsError, find_results, load_runs
from .compare import Comparison, Target, compare_runs
from .reader import Results, read_results, summarize
from .table import differing_keys, flat_config, tidy_table, to_dataframe, write_csv
from .writer import FINAL_STATUSES, FORMAT_VERSION, STATUSES, ResultsWriter

__all__ = [
    "FINAL_STATUSES",
    "FORMAT_VERSION",
    "STATUSES",
    "Comparison",
    "Results",
    "ResultsWriter",
    "RunsError",
    "Target",
    "compare_runs",
    "differing_keys",
    "find_results",
    "flat_config",
    "load_runs",
    "read_results",
    "summarize",
    "tidy_table",
    "to_dataframe",
    "write_csv",
]
