"""What a loaded model is (plain data for the CLI and the GUI) and the handle
that owns it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class ModelFacts:
    """What ``qdesk info`` and the GUI show about a loaded model (plain data, no torch)."""

    name: str
    source: str  # demo | hf | gguf | qdesk | hub
    path: str
    backend: str  # hf | llamacpp
    architecture: str
    parameters: int
    layers: int
    hidden_size: int
    vocab_size: int
    context_length: int
    dtype: str
    device: str
    memory_bytes: int
    dtype_reason: str = ""
    quantization: dict = field(default_factory=dict)
    # The quantized file these dense weights were dequantized from, in words
    # ("Q4_1 GGUF SmolLM2-135M-Instruct.Q4_1.gguf"); None for weights that were
    # never quantized. Quantizing such a model again starts from quantized weights.
    derived_from_quantized: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class LoadedModel:
    backend: object  # a LogitsBackend
    facts: ModelFacts
    model: object = None  # the torch module (hf backend), for quantization and analysis
    hf_tokenizer: object = None

    def close(self) -> None:
        self.backend.close()
        self.model = None
        if self.hf_tokenizer is not None:
            from qdesk.core.models.tokenizer_pool import give_back

            give_back(self.hf_tokenizer)
            self.hf_tokenizer = None


