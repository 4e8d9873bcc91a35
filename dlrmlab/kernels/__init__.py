"""Numba kernels: one skeleton per kernel family, specialised by policies at compile time."""
