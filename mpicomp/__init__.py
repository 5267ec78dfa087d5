"""mpicomp: communication-compressed distributed optimization and sampling on MPI."""

__version__ = "0.1.0"
