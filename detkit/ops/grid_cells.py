"""Numba helpers shared by the spatially indexed box kernels (NMS and anchor matching).

Both kernels bucket boxes into a uniform grid per size level: a box goes to the smallest level
whose cell size is at least its larger side, and to the cell of its centre, so a query only
visits the few cells that can hold an overlapping box.
"""

import numba as nb

__all__ = ["grid_cell", "size_level"]


@nb.njit(cache=True, inline="always")
def grid_cell(v, origin, inv_size, n):
    """Monotone map of a coordinate to a cell index in [0, n)."""
    q = (v - origin) * inv_size
    if q <= 0.0:
        return 0
    if q >= n - 1:
        return n - 1
    return int(q)


@nb.njit(cache=True, inline="always")
def size_level(side, sizes):
    """Smallest level whose size is >= side (the last level for larger sides)."""
    lev = 0
    while lev < sizes.shape[0] - 1 and sizes[lev] < side:
        lev += 1
    return lev
