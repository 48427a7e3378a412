"""Geometry, numba kernels, fitting and derived quantities: no Qt, no sockets."""
