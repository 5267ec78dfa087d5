"""Scripts the MPI tests launch under mpiexec, and the traffic they share with the tests."""
