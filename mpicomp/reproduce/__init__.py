"""Reproductions of the papers' claims: declarations (``claims/*.toml``, :mod:`.claim`), named
measures (:mod:`.measures`), the engine that runs, measures and judges them (:mod:`.engine`), their
reports (:mod:`.report`) and the ``mpicomp reproduce`` command (:mod:`.command`).
``docs/reproductions.md`` documents the declaration format.

Nothing is imported here, so that building the command line stays light.
"""
