"""One frozen, validated configuration of an export; bad values raise BadInput
with one line naming the option."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from qdesk.core.errors import BadInput

FORMATS = ("gguf", "gptq", "compressed-tensors", "bf16")

# GGUF: written by llama.cpp's converter (dense), by qdesk from a checkpoint's
# codes (exact), or by llama.cpp's quantizer (the rest).
CONVERTER_TYPES = ("F32", "F16", "BF16", "Q8_0")
LLAMA_TYPES = (
    "Q4_0", "Q4_1", "Q5_0", "Q5_1",
    "Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M",
    "Q6_K",
    "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S",
    "IQ3_M", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0",
)
GGUF_TYPES = ("exact", *CONVERTER_TYPES, *LLAMA_TYPES)
# llama.cpp refuses these without an importance matrix (llama-quant.cpp,
# tensor_requires_imatrix).
NEED_IMATRIX = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "Q2_K_S")
DENSE_TYPES = ("auto", "F32", "F16", "BF16", "Q8_0")
FLOAT_TYPES = ("F32", "F16", "BF16")


@dataclass(frozen=True)
class ExportConfig:
    """What to export and how.

    format: gguf | gptq | compressed-tensors | bf16. type (gguf only): exact,
    F32/F16/BF16/Q8_0 (dense, llama.cpp's converter) or a llama.cpp type
    (Q4_K_M, IQ4_XS, ...). allow_requantize: a quantized source may be
    re-quantized to a lossy type. imatrix_calib (llama.cpp types): a
    calibration set name or file to compute qdesk's importance matrix from, or
    an imatrix ``.gguf`` to reuse; imatrix_out: where the matrix is written
    (default: beside the output). plan (llama.cpp types): a qdesk plan whose
    rules set per-tensor types. dense_type (exact): the type of tensors qdesk
    did not quantize (embeddings, head); "auto" keeps their 16-bit dtype.
    widen (exact): 3- and 2-bit codes stored exactly in Q4_0/Q5_0. verify_*:
    the reopened file against the in-memory model on held-out text.
    """

    format: str
    output: Path
    type: str | None = None
    force: bool = False
    allow_requantize: bool = False
    imatrix_calib: str | None = None
    imatrix_out: Path | None = None
    calib_samples: int = 64
    calib_tokens: int = 512
    seed: int = 0
    plan: str | None = None
    dense_type: str = "auto"
    widen: bool = False
    shard_bytes: int = 4 * 2**30
    verify: bool = True
    verify_text: str = "heldout"
    verify_ctx: int = 256
    verify_chunks: int = 8
    threads: int = 0

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise BadInput(f"unknown export format '{self.format}' (choose {', '.join(FORMATS)})")
        object.__setattr__(self, "output", Path(self.output).expanduser())
        if self.imatrix_out is not None:
            object.__setattr__(self, "imatrix_out", Path(self.imatrix_out).expanduser())
        if self.format == "gguf":
            if self.output.suffix.lower() != ".gguf":
                raise BadInput(f"a GGUF export is a .gguf file, not {self.output.name}")
            if self.imatrix_out is not None and self.imatrix_out.suffix.lower() != ".gguf":
                raise BadInput(f"the importance matrix is a .gguf file, not {self.imatrix_out.name}")
            t = (self.type or "").strip()
            canon = "exact" if t.lower() == "exact" else t.upper()
            if canon not in GGUF_TYPES:
                raise BadInput(f"unknown GGUF type '{self.type}' (choose exact, "
                               f"{', '.join(CONVERTER_TYPES)} or a llama.cpp type such as "
                               "Q4_K_M, Q5_K_M, Q6_K, Q3_K_M, Q2_K, IQ4_XS)")
            object.__setattr__(self, "type", canon)
        elif self.type not in (None, "", self.format):
            raise BadInput(f"--type applies to --format gguf; {self.format} has no types")
        else:
            object.__setattr__(self, "type", self.format)
        llama = self.type in LLAMA_TYPES
        if self.imatrix_calib is not None and not llama:
            raise BadInput(f"an importance matrix applies to llama.cpp's types "
                           f"(Q4_K_M, IQ4_XS, ...), not {self.type}")
        if self.type in NEED_IMATRIX and self.imatrix_calib is None:
            raise BadInput(f"llama.cpp's {self.type} needs an importance matrix: "
                           "give --imatrix-calib (e.g. mix)")
        if self.plan is not None and not llama:
            raise BadInput(f"a plan sets per-tensor llama.cpp types; {self.type} has none")
        if self.dense_type not in DENSE_TYPES:
            raise BadInput(f"unknown dense type '{self.dense_type}' (choose {', '.join(DENSE_TYPES)})")
        if self.dense_type != "auto" and self.type != "exact":
            raise BadInput("--dense-type applies to --type exact (other types set every tensor)")
        if self.widen and self.type != "exact":
            raise BadInput("--widen applies to --type exact")
        if self.calib_samples < 1 or self.calib_tokens < 8:
            raise BadInput("the importance matrix needs at least 1 calibration sample of 8 tokens")
        if self.verify_ctx < 16 or self.verify_chunks < 1:
            raise BadInput("verification needs windows of at least 16 tokens and at least 1 window")
        if self.shard_bytes < 2**20:
            raise BadInput("shards must be at least 1 MiB")
        if self.threads < 0:
            raise BadInput(f"--threads must be 0 (all cores) or more, got {self.threads}")

    @property
    def is_llama_type(self) -> bool:
        return self.type in LLAMA_TYPES

    def to_json(self) -> dict:
        d = asdict(self)
        d["output"] = str(self.output)
        d["imatrix_out"] = None if self.imatrix_out is None else str(self.imatrix_out)
        return d
