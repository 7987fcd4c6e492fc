"""What a loaded model is (plain data for the CLI and the GUI) and the handle
that owns it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


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

    def can_use_int8_activations(self) -> bool:
        """Whether ``set_int8_activations`` would change anything: a packed
        checkpoint with 4-bit codes in groups of 64s on qdesk's CPU kernel."""
        if self.model is None or self.facts.backend != "hf":
            return False
        from qdesk.core.packed.native_kernels import int8_capable

        return bool(int8_capable(self.model))

    def set_int8_activations(self, on: bool) -> int:
        """Switch a packed checkpoint's decode steps to int8-rounded activations
        (``qdesk.core.packed.native_kernels.use_int8_activations``: faster, not
        the exact product) or back; the facts record it (``quantization
        ["int8_activations"]``). Returns how many kernels took it: 0 for a model
        that has none (dense, llama.cpp, another kernel or format), whose facts
        stay."""
        if self.model is None or self.facts.backend != "hf":
            return 0
        from qdesk.core.packed.native_kernels import use_int8_activations

        count = use_int8_activations(self.model, on)
        if count:
            q = {k: v for k, v in self.facts.quantization.items() if k != "int8_activations"}
            if on:
                q["int8_activations"] = True
            self.facts = replace(self.facts, quantization=q)
        return count

    def close(self) -> None:
        self.backend.close()
        self.model = None
        if self.hf_tokenizer is not None:
            from qdesk.core.models.tokenizer_pool import give_back

            give_back(self.hf_tokenizer)
            self.hf_tokenizer = None


