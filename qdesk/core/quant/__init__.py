"""Weight-only quantization of decoder Linear layers: RTN, GPTQ, AWQ, HQQ.

Entry points: ``quantize_steps`` (the job, a generator of events) and
``quantize_weight`` (one tensor, one config). Checkpoints are compressed-tensors
``pack-quantized`` folders that transformers loads.
"""
