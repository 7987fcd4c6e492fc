"""Weight-only quantization of decoder Linear layers: RTN, GPTQ, AWQ, HQQ.

Entry points: ``quantize_steps`` (the job, a generator of events, ending with
its own check against the original on held-out text) and ``quantize_weight``
(one tensor, one config). What a model family's layout means for the methods
lives in ``layouts``. Checkpoints are compressed-tensors ``pack-quantized``
folders that transformers loads.
"""
