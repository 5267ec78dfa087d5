"""An example mpicomp plugin: the ``coinflip`` compressor and the ``heavy-ball`` method."""
