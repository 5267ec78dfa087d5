"""An example mpicomp plugin: the ``coinflip`` compressor, the ``heavy-ball`` method, the ``quadratics`` problem."""
