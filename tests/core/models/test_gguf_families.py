"""GGUF files of every family on both backends: facts, chat, the dense copy against llama.cpp.

The files are tiny random-weight models converted by llama.cpp's own converter
(conftest.py) to BF16, so the dense BF16 copy holds exactly the file's values
and what differs between the backends is the computation, not the weights.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from gguf_tiny_files import GGUF_FAMILIES

from qdesk.cli import main
from qdesk.core.chat.events import SamplingConfig
from qdesk.core.chat.session import ChatSession, PaneDone
from qdesk.core.chat.tokenizers import FINGERPRINT_PROBE
from qdesk.core.models import open_model

# family -> (GGUF architecture, the transformers class of its dense copy)
EXPECTED = {
    "llama": ("llama", "LlamaForCausalLM"),
    "mistral": ("llama", "LlamaForCausalLM"),  # llama.cpp's converter writes Mistral as llama
    "qwen2": ("qwen2", "Qwen2ForCausalLM"),
    "qwen3": ("qwen3", "Qwen3ForCausalLM"),
    "gemma2": ("gemma2", "Gemma2ForCausalLM"),
    "gemma3": ("gemma3", "Gemma3ForCausalLM"),
    "phi3": ("phi3", "Phi3ForCausalLM"),
    "qwen3_moe": ("qwen3moe", "Qwen3MoeForCausalLM"),
}
# transformers picks Qwen2Tokenizer for every qwen2 model and rebuilds its
# pre-tokenizer, which does not match the test's SentencePiece vocabulary (a
# real Qwen2 file has the Qwen2 BPE vocabulary it expects).
SAME_TOKENIZER = [f for f in GGUF_FAMILIES if f != "qwen2"]


@pytest.fixture(scope="module")
def both(tiny_gguf, gguf_data_dir):
    """both(family) -> (transformers LoadedModel of the dense copy, llama.cpp LoadedModel)."""
    opened = {}

    def get(family):
        if family not in opened:
            path = str(tiny_gguf(family))
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("QDESK_DATA_DIR", str(gguf_data_dir))
                opened[family] = (open_model(path, backend="hf", dtype="float32"),
                                  open_model(path, backend="llamacpp"))
        return opened[family]

    yield get
    for hf, gguf in opened.values():
        hf.close()
        gguf.close()


def _kld(ref_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """KL(ref || other) per position, in nats."""
    def log_softmax(x):
        x = x.astype(np.float64)
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    p, q = log_softmax(ref_logits), log_softmax(logits)
    return (np.exp(p) * (p - q)).sum(-1)


@pytest.mark.parametrize("family", GGUF_FAMILIES)
@pytest.mark.parametrize("backend", ["llamacpp", "hf"])
def test_info_facts(family, backend, tiny_gguf, gguf_data_dir, monkeypatch, capsys):
    monkeypatch.setenv("QDESK_DATA_DIR", str(gguf_data_dir))
    assert main(["info", str(tiny_gguf(family)), "--backend", backend, "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    arch, cls = EXPECTED[family]
    assert facts["backend"] == backend and facts["source"] == "gguf"
    assert facts["architecture"] == (arch if backend == "llamacpp" else cls)
    assert (facts["layers"], facts["hidden_size"]) == (2, 64)
    assert facts["vocab_size"] == (512 if family in ("qwen2", "gemma2", "phi3") else 49152)
    assert facts["context_length"] == 256
    assert facts["derived_from_quantized"] is None  # BF16 file: nothing was quantized


@pytest.mark.parametrize("family", GGUF_FAMILIES)
def test_parameter_counts_agree(family, both):
    hf, gguf = both(family)
    assert hf.facts.parameters == gguf.facts.parameters > 0


@pytest.mark.parametrize("family", GGUF_FAMILIES)
def test_dense_copy_agrees_with_llama_cpp(family, both):
    hf, gguf = both(family)
    rng = np.random.default_rng(0)
    prompt = gguf.backend.tokenizer.encode_chat([{"role": "user", "content": "Hello there!"}])
    # 48 positions: past the sliding window (32) of the Gemma models.
    ids = list(prompt) + [int(i) for i in rng.integers(0, hf.facts.vocab_size, 48 - len(prompt))]
    a, b = gguf.backend.score(ids), hf.backend.score(ids)
    assert a.shape == b.shape == (48, hf.facts.vocab_size)
    kld = _kld(a, b)
    top1 = float(np.mean(a.argmax(-1) == b.argmax(-1)))
    # llama.cpp rounds activations to BF16 for BF16 weights; transformers computes
    # in float32. Measured here: max |difference| 1.6e-3..6.2e-3, mean KLD
    # 5e-8..3.5e-7, top-1 96-100% (near ties of a random model); on F32 files
    # max |difference| 1e-4..6e-4 and mean KLD below 1e-8.
    assert np.abs(a - b).max() < 0.05
    assert kld.mean() < 1e-5 and kld.max() < 1e-4
    assert top1 >= 0.9


@pytest.mark.parametrize("family", SAME_TOKENIZER)
def test_tokenizers_agree(family, both):
    hf, gguf = both(family)
    th, tg = hf.backend.tokenizer, gguf.backend.tokenizer
    assert th.fingerprint() == tg.fingerprint()
    messages = [{"role": "user", "content": FINGERPRINT_PROBE}]
    assert th.encode_chat(messages) == tg.encode_chat(messages)


@pytest.mark.parametrize("family", GGUF_FAMILIES)
def test_chat_on_both_backends(family, both):
    hf, gguf = both(family)
    session = ChatSession([hf.backend, gguf.backend], SamplingConfig(max_new_tokens=6))
    done = {e.pane: e for e in session.send("Tell me a story.") if isinstance(e, PaneDone)}
    assert set(done) == {0, 1}
    for pane in done.values():
        assert 1 <= len(pane.reply.token_ids) <= 6
    if family in SAME_TOKENIZER:
        assert done[0].prompt_ids == done[1].prompt_ids
        # Greedy on the same weights: the same reply, token for token.
        assert done[0].reply.token_ids == done[1].reply.token_ids


def test_compare_dense_copy_with_llama_cpp(tiny_gguf, gguf_data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QDESK_DATA_DIR", str(gguf_data_dir))
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    path = str(tiny_gguf("gemma3"))
    code = main(["compare", path, path, "--backend", "hf,llamacpp", "--text", str(text),
                 "--ctx", "48", "--chunks", "2", "--dtype", "float32", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    (report,) = out["reports"]
    assert report["tokens"] > 0 and report["same_top_p"] > 0.95
    assert report["mean_kld"] < 1e-6
