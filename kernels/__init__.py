"""qdesk's Triton (and optional CUDA) kernels, imported as ``qdesk_kernels``.

The folder is ``kernels/`` but the import name is ``qdesk_kernels``: a PyPI
package called ``kernels`` exists and transformers looks for it.
"""
