"""Data-parallel training: a step over threads and MPI ranks."""
