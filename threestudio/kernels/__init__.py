"""Kernels: components with an accelerated backend and a pure-PyTorch one.

Each file is one kernel with its backends behind one interface, and one function that picks the
backend (the only place that decides):

- ``hash_grid``: the multiresolution hash grid (tiny-cuda-nn, or pure PyTorch); ``use_tcnn``;
- ``rasterizer``: triangle rasterisation, interpolation, antialiasing (nvdiffrast, or pure
  PyTorch); ``make_rasterizer``, once per ``NVDiffRasterizerContext``;
- ``ray_marching``: occupancy-grid and importance sampling, packed volume-rendering ops (nerfacc's
  CUDA kernels, or pure PyTorch); ``use_nerfacc_kernels``.

``backend.report_fallback`` is the one line (logged once per process and kernel) that says an
accelerated backend was asked for and the pure-PyTorch one runs instead.

Both backends of a kernel give the same results; the tests compare them where both run.

This package sits just above ``threestudio.utils``: it imports nothing from ``threestudio.models``,
``threestudio.data`` or ``threestudio.systems``, so that ``threestudio.utils.rasterize`` can
re-export from it.
"""
