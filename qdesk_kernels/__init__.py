"""qdesk's kernels: Triton (and optional CUDA) for the GPU, C for the CPU (``cpu``).

Not named ``kernels``: that is a PyPI package transformers depends on (5.25+)
and imports; a ``kernels/`` folder in the repository root would shadow it for
anything run from there (pytest, ``make run``).

``packing`` holds the GPU weight layout and the torch reference of every
kernel (importable without Triton); ``wq_linear`` the Triton kernels and their
launcher (imports Triton); ``cpu`` the C kernels of packed models on the CPU
(AVX2/FMA, portable C otherwise), compiled on first use and loaded with ctypes.
"""
