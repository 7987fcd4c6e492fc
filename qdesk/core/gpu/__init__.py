"""Fast batch-1 decoding for the GPU: a static KV cache whose one-token step is
compiled into CUDA graphs, and per-token statistics computed on the device.

Both run on the CPU too (eagerly), which is how they are tested here; the
compiled path needs CUDA. Importing the package loads torch.
"""

from qdesk.core.gpu.device_stats import device_stats, stats_from_packed
from qdesk.core.gpu.static_decode import StaticCacheBackend

__all__ = ["StaticCacheBackend", "device_stats", "stats_from_packed"]
