"""Chat speed on the demo model per backend and per situation: qdesk's thread
policy against the plain libraries at their own defaults and against the
process-wide wait policies qdesk used before (issue 13).

Every measurement runs in a child process (libgomp reads OMP_WAIT_POLICY once,
when it loads), in rounds, so that the modes of one row alternate in time; the
table gives medians over all rounds.

Modes:
  plain    the library alone at its own defaults, no OMP_* variable: llama-cpp-python's
           ``Llama.generate`` with its default threads; transformers' ``generate``
  qdesk    the app's settings (configure_openmp, the adaptive thread plan)
  passive  OMP_WAIT_POLICY=PASSIVE and fixed threads on every CPU (qdesk before issue 13)
  active   OMP_WAIT_POLICY=ACTIVE and fixed threads on every CPU

Situations (decode tokens/s after the first token; "combined" sums the panes):
  llama    one llama.cpp pane (the shipped Q4_1 GGUF), qdesk generation with statistics
  hf       one transformers pane (the dense demo), qdesk generation with statistics
  two      two panes in one chat, transformers + llama.cpp, combined
  scorer   the llama.cpp pane with live agreement against the transformers reference,
           its scorer stepping every token in a worker thread (no batching), combined
  quant    the llama.cpp pane while a quantization loop (RTN of the demo's Linears with
           the range search, what a quantization job computes) runs in another thread
           and re-plans its torch threads once per layer; chat tok/s and layers/s
  gui      the llama.cpp pane while a thread does 2 ms of Python work every 10 ms
           (a window painting the stream); chat tok/s and that thread's worst lateness

Targets: llama and hf qdesk >= 0.9x plain; two and scorer qdesk >= the better of
passive and active.

    .venv/bin/python benchmarks/bench_chat.py [--rounds 3] [--reps 2] [--tokens 64]
        [--situations llama,hf,two,scorer,quant,gui]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

PROMPT = "Write a long, detailed story about a dragon who learns to bake bread."
MODES = ("plain", "qdesk", "passive", "active")
SITUATIONS = {
    "llama": MODES, "hf": MODES,
    "two": MODES[1:], "scorer": MODES[1:], "quant": MODES[1:], "gui": MODES[1:],
}


# -- children ------------------------------------------------------------------

def _rate(n_tokens: int, t_first: float, t_end: float) -> float:
    return (n_tokens - 1) / (t_end - t_first)


def _plain_llama(reps: int, n: int) -> list[float]:
    from llama_cpp import Llama

    from qdesk.core.models.demo import demo_gguf_path

    llm = Llama(model_path=str(demo_gguf_path()), n_ctx=2048, verbose=False)
    ids = llm.tokenize(PROMPT.encode())
    out = []
    for _ in range(reps + 1):
        count, t_first = 0, None
        for _tok in llm.generate(ids, temp=0.0, reset=True):
            count += 1
            if count == 1:
                t_first = time.perf_counter()
            if count == n:
                break
        out.append(_rate(count, t_first, time.perf_counter()))
    return out[1:]  # the first is a warm-up


def _plain_hf(reps: int, n: int) -> list[float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qdesk.core.models import demo_dense_dir

    path = str(demo_dense_dir())
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()  # its own default dtype
    ids = torch.tensor([tok.apply_chat_template([{"role": "user", "content": PROMPT}],
                                                add_generation_prompt=True, tokenize=True,
                                                return_dict=False)])
    out = []
    with torch.inference_mode():
        for _ in range(reps + 1):
            t0 = time.perf_counter()
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1,
                           min_new_tokens=1, do_sample=False)
            t1 = time.perf_counter()
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                           min_new_tokens=n, do_sample=False)
            t2 = time.perf_counter()
            out.append((n - 1) / ((t2 - t1) - (t1 - t0)))
    return out[1:]


def _stream(backend, n: int) -> float:
    from qdesk.core.chat.events import ReplyDone, SamplingConfig
    from qdesk.core.chat.generate import generate_steps

    backend.reset()
    prompt = backend.tokenizer.encode_chat([{"role": "user", "content": PROMPT}])
    for ev in generate_steps(backend, prompt, SamplingConfig(max_new_tokens=n)):
        if isinstance(ev, ReplyDone):
            return ev.decode_tokens_per_second
    raise RuntimeError("no reply")


def _session_rate(events, n_panes: int) -> float:
    """Combined decode tokens/s: tokens after each pane's first, over the time from
    the last pane's first token to the end."""
    t_first, tokens, seen = None, 0, set()
    for ev in events:
        if type(ev).__name__ not in ("PaneToken", "ComparedToken"):
            continue
        if ev.pane not in seen:
            seen.add(ev.pane)
            if len(seen) == n_panes:
                t_first = time.perf_counter()
            continue
        if t_first is not None:
            tokens += 1
    return tokens / (time.perf_counter() - t_first)


def _background(stop: threading.Event, work, counter: list) -> threading.Thread:
    def run():
        while not stop.is_set():
            work()
            counter[0] += 1
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def child(situation: str, mode: str, reps: int, n: int) -> dict:
    if mode == "plain":
        return {"rates": _plain_llama(reps, n) if situation == "llama" else _plain_hf(reps, n)}
    from qdesk.core.threads import configure_openmp

    configure_openmp()
    from qdesk.core.models import open_model

    if situation in ("llama", "hf"):
        m = open_model("demo", backend="llamacpp" if situation == "llama" else "hf")
        _stream(m.backend, 8)
        return {"rates": [_stream(m.backend, n) for _ in range(reps)], "dtype": m.facts.dtype}
    from qdesk.core.chat.events import SamplingConfig

    sampling = SamplingConfig(max_new_tokens=n)
    pane = open_model("demo", backend="llamacpp")
    if situation in ("two", "scorer"):
        from qdesk.core.chat.session import ChatSession
        from qdesk.core.compare.live import ComparedSession

        ref = open_model("demo", backend="hf")
        rates = []
        for _ in range(reps):
            if situation == "two":
                s = ChatSession([ref.backend, pane.backend], sampling)
            else:
                s = ComparedSession(ref.backend, [pane.backend], sampling, reverse=False,
                                    reuse_reference=False, batch=False)
            rates.append(_session_rate(s.send(PROMPT), 2))
            if situation == "scorer":
                s.close_scorers()
        return {"rates": rates}
    stop, counter = threading.Event(), [0]
    extra = {}
    if situation == "quant":
        import torch

        from qdesk.core.quant.configs import make_config
        from qdesk.core.quant.methods import quantize_weight
        from qdesk.core.threads import apply_torch_threads

        dense = open_model("demo", backend="hf")
        weights = [m.weight.detach() for name, m in dense.model.named_modules()
                   if isinstance(m, torch.nn.Linear) and "lm_head" not in name]
        config = make_config("rtn", bits=4, group_size=64, symmetric=True)
        index = [0]

        def work():
            if mode == "qdesk":
                apply_torch_threads()  # what a job does once per layer under the policy
            quantize_weight(weights[index[0] % len(weights)], config)
            index[0] += 1
        thread = _background(stop, work, counter)
    else:  # gui
        late = [0.0]

        def work():
            t = time.perf_counter()
            x = 0
            while time.perf_counter() - t < 0.002:  # 2 ms of Python, holding the GIL
                x += 1
            due = t + 0.010
            time.sleep(max(0.0, due - time.perf_counter()))
            late[0] = max(late[0], time.perf_counter() - due)
        thread = _background(stop, work, counter)
    time.sleep(0.5)
    t0, c0 = time.perf_counter(), counter[0]
    rates = [_stream(pane.backend, n) for _ in range(reps)]
    extra["background_per_s"] = (counter[0] - c0) / (time.perf_counter() - t0)
    if situation == "gui":
        extra["worst_late_ms"] = late[0] * 1e3
    stop.set()
    thread.join()
    return {"rates": rates, **extra}


# -- parent --------------------------------------------------------------------

def _env(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OMP_") and k != "QDESK_THREADS"}
    if mode in ("passive", "active"):
        env["OMP_WAIT_POLICY"] = mode.upper()
        env["QDESK_THREADS"] = str(len(os.sched_getaffinity(0)))  # the old fixed setting
    return env


def run_child(situation: str, mode: str, reps: int, n: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", situation, mode, str(reps), str(n)],
        env=_env(mode), capture_output=True, text=True, timeout=900,
    )
    if out.returncode:
        raise RuntimeError(f"{situation}/{mode} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        situation, mode, reps, n = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        print(json.dumps(child(situation, mode, reps, n)))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--situations", default=",".join(SITUATIONS))
    args = ap.parse_args()
    wanted = [s for s in args.situations.split(",") if s]
    results = {(s, m): [] for s in wanted for m in SITUATIONS[s]}
    loads = []
    for r in range(args.rounds):
        for s in wanted:
            for m in SITUATIONS[s]:
                loads.append(os.getloadavg()[0])
                results[(s, m)].append(run_child(s, m, args.reps, args.tokens))
                print(f"round {r + 1} {s:>6} {m:>7}: "
                      + " ".join(f"{x:.1f}" for x in results[(s, m)][-1]["rates"]),
                      file=sys.stderr, flush=True)
    cpus = len(os.sched_getaffinity(0))
    print(f"\ndemo model, {args.tokens} tokens, {args.rounds} rounds x {args.reps} runs per mode, "
          f"{cpus} CPUs, 1-minute load average during the runs "
          f"{min(loads):.2f}-{max(loads):.2f} (median {statistics.median(loads):.2f})\n")
    print("| situation | mode | tokens/s (median) | runs | vs plain | vs best of passive/active | other |")
    print("|---|---|---|---|---|---|---|")
    for s in wanted:
        med = {m: statistics.median(x for res in results[(s, m)] for x in res["rates"])
               for m in SITUATIONS[s]}
        best_old = max(med["passive"], med["active"])
        for m in SITUATIONS[s]:
            runs = [x for res in results[(s, m)] for x in res["rates"]]
            other = ""
            if s in ("quant", "gui"):
                bg = statistics.median(res["background_per_s"] for res in results[(s, m)])
                other = f"background {bg:.1f}/s"
                if s == "gui":
                    late = max(res["worst_late_ms"] for res in results[(s, m)])
                    other += f", worst tick lateness {late:.0f} ms"
            vs_plain = f"{med[m] / med['plain']:.2f}x" if "plain" in med else ""
            print(f"| {s} | {m} | {med[m]:.1f} | {' '.join(f'{x:.0f}' for x in runs)} | "
                  f"{vs_plain} | {med[m] / best_old:.2f}x | {other} |")


if __name__ == "__main__":
    main()
