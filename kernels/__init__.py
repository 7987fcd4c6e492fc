"""qdesk's Triton (and optional CUDA) kernels, imported as ``qdesk_kernels``.

The folder is ``kernels/`` but the import name is ``qdesk_kernels``: a PyPI
package called ``kernels`` exists and transformers looks for it.

``packing`` holds the GPU weight layout and the torch reference of every
kernel (importable without Triton); ``wq_linear`` the Triton kernels and their
launcher (imports Triton).
"""
