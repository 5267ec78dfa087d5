"""mpicomp: communication-compressed distributed optimization and sampling on MPI."""

from ._vector_width import use_full_vector_width

__version__ = "0.1.0"

use_full_vector_width()  # before numba sets up its code generator: every mpicomp module is imported after this
