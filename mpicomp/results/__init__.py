"""Run results in HDF5: a streaming writer for rank 0 and a reader/summary for tools.

Layout and guarantees: ``docs/results-format.md``.
"""

from .reader import Results, read_results, summarize
from .writer import FINAL_STATUSES, FORMAT_VERSION, STATUSES, ResultsWriter

__all__ = ["FINAL_STATUSES", "FORMAT_VERSION", "STATUSES", "Results", "ResultsWriter", "read_results", "summarize"]
