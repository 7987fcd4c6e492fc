"""A side-by-side chat with live agreement: ``ChatSession`` plus teacher forcing.

Pane 0 is the reference. Every other pane that shares the reference's
vocabulary gets its own *scorer*: a fork of the reference backend with its own
KV cache, which follows the pane's prefix one token at a time, so each pane
token costs one reference step. While a pane's prefix is still the reference
pane's own prefix (same prompt ids, same tokens so far), the reference pane's
logits for that prefix are reused and the scorer waits; once the paths part it
takes over the reference pane's cache (or catches up with one prefill).

Where the backend can (transformers), the scorers' steps ride along with the
reference pane's own decode step in one batched forward pass, which on a CPU
costs little more than the reference step alone. Otherwise (llama.cpp, or the
reference pane has finished) a scorer steps on its own, in a worker thread
while the panes decode.

At the end of a reply, once the reference's reply is done too, the reference's
own reply is scored under the pane's model (the other direction), as a
``DivergenceReport`` over the reply's positions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from qdesk.core.chat.backends import LogitsBackend, common_prefix
from qdesk.core.chat.events import ReplyDone, SamplingConfig, TokenEvent
from qdesk.core.chat.session import ChatSession, PaneDone, PaneToken
from qdesk.core.compare.agreement import Agreement, ReplyAgreement, agreement, summarize_reply
from qdesk.core.compare.divergence import DivergenceReport, summarize
from qdesk.core.compare.llama_stats import position_stats
from qdesk.core.errors import BadInput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComparedToken:
    """A pane's token; agreement is None for the reference and for panes
    compared with nothing (another vocabulary, no reference)."""

    pane: int
    event: TokenEvent
    agreement: Agreement | None


@dataclass(frozen=True)
class ComparedDone:
    pane: int
    reply: ReplyDone
    prompt_ids: tuple[int, ...]
    summary: ReplyAgreement | None


@dataclass(frozen=True)
class ReverseScored:
    """The reference's own reply scored under pane ``pane``'s model
    (base = reference, Q = the pane's model)."""

    pane: int
    report: DivergenceReport


@dataclass(frozen=True)
class PaneNotice:
    """Something the user should read, e.g. why a pane has no statistics."""

    pane: int | None
    message: str


ComparedEvent = ComparedToken | ComparedDone | ReverseScored | PaneNotice


class _Recording:
    """A backend that remembers the logits it last returned (the ones the
    generator is choosing the current token from). ``feed_with``, when set,
    runs the feed instead (the reference pane's step batched with scorers)."""

    def __init__(self, backend: LogitsBackend) -> None:
        self.backend = backend
        self.feed_with = None
        self.last: np.ndarray | None = None

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def prefill(self, ids):
        self.last = self.backend.prefill(ids)
        return self.last

    def feed(self, ids):
        self.last = self.feed_with(ids) if self.feed_with else self.backend.feed(ids)
        return self.last


class _PaneState:
    def __init__(self, scorer: LogitsBackend | None) -> None:
        self.scorer = scorer
        self.prompt: list[int] = []
        self.tokens: list[int] = []
        self.shared = True  # the prefix so far is the reference pane's own
        self.pending: Future | None = None  # the scorer stepping ahead, in a worker thread
        self.pending_len = -1  # the prefix length it is computing
        self.queued: int | None = None  # a token for the scorer's next batched step
        self.ready: tuple[int, np.ndarray] | None = None  # (prefix length, its logits)
        self.values: list[Agreement] = []
        self.done: ComparedDone | None = None


class ComparedSession:
    """Like ``ChatSession`` (same ``send``), with agreement for panes 1….

    reference: the reference backend, or None when it failed to load (then
    ``reference_error`` says why, and the other panes run without statistics).
    The pane numbers stay those of the full list: pane 0 is the reference.
    """

    def __init__(
        self,
        reference: LogitsBackend | None,
        panes: Sequence[LogitsBackend],
        sampling: SamplingConfig | None = None,
        system: str | None = None,
        reference_error: str | None = None,
        reverse: bool = True,
        reuse_reference: bool = True,
        overlap: bool = True,
        batch: bool = True,
    ) -> None:
        if not panes:
            raise BadInput("a comparison needs at least one model besides the reference")
        if reference is not None and any(p is reference for p in panes):
            raise BadInput("the reference is also given as a pane; load it once per pane")
        self.reference = reference
        self.reverse = reverse
        self.reuse_reference = reuse_reference  # False: always step the scorer (benchmarks)
        # The scorer's step for the next token runs in a worker thread while the
        # panes decode (torch and llama.cpp release the GIL while computing).
        self.overlap = overlap
        self.batch = batch  # False: scorers never join the reference pane's step (benchmarks)
        self._pool: ThreadPoolExecutor | None = None
        self._batch = None  # the reference pane and scorers stepping together
        self.batched_steps = 0  # scorer steps that rode along with the reference pane's
        self._states: list[_PaneState] = []
        self.notices: list[PaneNotice] = []
        if reference is None:
            self.notices.append(PaneNotice(0, (
                f"the reference failed to load ({reference_error or 'unknown error'}); "
                "the other models run without agreement statistics"
            )))
        self._recorders = [_Recording(b) for b in ([reference] if reference else []) + list(panes)]
        if reference is not None:
            self._recorders[0].feed_with = self._feed_reference
        self._offset = 0 if reference is not None else 1  # session pane -> user pane
        self.session = ChatSession(self._recorders, sampling, system)
        self._scorers: list[LogitsBackend | None] = [None]
        ref_fp = reference.tokenizer.fingerprint() if reference is not None else None
        for i, b in enumerate(panes, start=1):
            scorer = None
            if reference is not None and b.tokenizer.fingerprint() != ref_fp:
                self.notices.append(PaneNotice(i, (
                    f"{b.name} and the reference {reference.name} use different vocabularies "
                    "(token ids differ): no agreement statistics for this pane"
                )))
            elif reference is not None:
                try:
                    scorer = reference.fork()
                except Exception as e:  # the pane still runs, only without statistics
                    log.exception("cannot fork the reference for pane %d", i)
                    self.notices.append(PaneNotice(i, f"cannot run the reference for {b.name}: {e}"))
            self._scorers.append(scorer)

    @property
    def sampling(self) -> SamplingConfig:
        return self.session.sampling

    def close_scorers(self) -> None:
        self._leave_batch()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for s in self._scorers:
            if s is not None:
                s.close()
        self._scorers = [None] * len(self._scorers)

    def send(self, prompt: str, cancel: threading.Event | None = None) -> Iterator[ComparedEvent]:
        """Run ``prompt`` on every model; yield tokens with their agreement."""
        yield from self.notices
        self.notices = []
        n = len(self._scorers)
        states = [_PaneState(self._scorers[i]) for i in range(n)]
        ref_logits: dict[int, np.ndarray] = {}  # the reference pane's logits per step
        if self.overlap and self._pool is None and any(self._scorers):
            self._pool = ThreadPoolExecutor(
                max_workers=sum(x is not None for x in self._scorers),
                thread_name_prefix="qdesk-scorer",
            )
        self._states = states
        try:
            yield from self._send(prompt, cancel, states, ref_logits)
        finally:
            self._leave_batch()
            for st in states:  # never leave a scorer running past the reply
                self._settle(st)
            self._states = []

    def _send(self, prompt, cancel, states, ref_logits) -> Iterator[ComparedEvent]:
        ref_state = states[0]
        for ev in self.session.send(prompt, cancel):
            pane = ev.pane + self._offset
            st = states[pane]
            if isinstance(ev, PaneToken):
                logits = self._recorders[ev.pane].last
                if not st.tokens and not st.prompt:
                    st.prompt = list(self.session.prompt_ids(ev.pane, prompt))
                a = None
                if pane == 0:
                    ref_logits[len(st.tokens)] = logits
                elif st.scorer is not None:
                    ref = self._ref_logits(st, ref_state, ref_logits)
                    a = agreement(ref, logits, ev.event.token_id)
                    st.values.append(a)
                st.tokens.append(ev.event.token_id)
                if pane != 0 and st.scorer is not None and not ev.event.is_end:
                    self._step_ahead(st, ref_state)
                self._prune(states, ref_logits)
                yield ComparedToken(pane, ev.event, a)
            elif isinstance(ev, PaneDone):
                self._settle(st)
                st.prompt = list(ev.prompt_ids)
                summary = (
                    summarize_reply(st.values, st.tokens) if st.scorer is not None else None
                )
                st.done = ComparedDone(pane, ev.reply, ev.prompt_ids, summary)
                yield st.done
                if pane == 0:
                    ref_logits.clear()  # not needed past the reply
                if self.reverse and self.reference is not None:
                    yield from self._reverse(states, pane)

    def _ref_logits(self, st: _PaneState, ref: _PaneState, ref_logits: dict[int, np.ndarray]):
        k = len(st.tokens)
        st.shared = (
            st.shared
            and self.reuse_reference
            and st.prompt == ref.prompt
            and (k == 0 or ref.tokens[k - 1 : k] == st.tokens[k - 1 : k])
        )
        if st.shared and k in ref_logits:  # the reference pane computed this very prefix
            self._settle(st)
            return ref_logits[k]
        if st.ready is not None and st.ready[0] == k:  # stepped with the reference pane
            out, st.ready = st.ready[1], None
            return out
        st.queued = st.ready = None
        if st.pending is not None and st.pending_len == k:
            out = st.pending.result()
            st.pending = None
            return out
        self._settle(st)
        target = st.prompt + st.tokens
        self._start_from_reference(st.scorer, target)
        return st.scorer.prefill(target)  # one step when it kept up

    def _step_ahead(self, st: _PaneState, ref: _PaneState) -> None:
        """Start the scorer on the prefix the pane's next token will come from,
        unless the reference pane will compute that prefix anyway."""
        k = len(st.tokens)
        will_share = (
            st.shared and self.reuse_reference and st.prompt == ref.prompt
            and ref.tokens[k - 1 : k] == st.tokens[k - 1 : k] and ref.done is None
        )
        if will_share:
            return
        self._settle(st)
        if self._queue_for_batch(st, ref):
            return
        if self._pool is None:
            return
        self._leave_batch()  # the worker's scorer must own its cache
        st.pending_len = k
        st.pending = self._pool.submit(st.scorer.prefill, st.prompt + st.tokens)

    def _queue_for_batch(self, st: _PaneState, ref: _PaneState) -> bool:
        """Queue the pane's newest token for the scorer's step in the reference
        pane's next (batched) feed, if the reference pane will step again and
        the backend can batch. The scorer first holds the prefix before it."""
        reference = self.reference
        if not self.batch or ref.done is not None or not hasattr(reference, "can_batch_with"):
            return False
        before = st.prompt + st.tokens[:-1]
        self._start_from_reference(st.scorer, before)
        if st.scorer.tokens != before:
            st.scorer.prefill(before)
        if not reference.can_batch_with(st.scorer):
            return False
        st.queued = st.tokens[-1]
        return True

    def _start_from_reference(self, scorer: LogitsBackend, target: list[int]) -> None:
        """Where the reference pane's cache holds more of ``target`` than the
        scorer's (the paths parted only now), the scorer takes a copy of it
        instead of computing that prefix again."""
        reference = self.reference
        if not hasattr(scorer, "copy_cache_from") or reference is None:
            return
        if common_prefix(reference.tokens, target) > common_prefix(scorer.tokens, target):
            scorer.copy_cache_from(reference)

    def _feed_reference(self, ids):
        """The reference pane's own step, with every queued scorer step in the
        same forward pass."""
        reference = self.reference
        rows = [st for st in self._states[1:] if st.queued is not None]
        if len(ids) != 1 or not rows:
            self._leave_batch()
            return reference.feed(ids)
        from qdesk.core.chat.hf_backend import HFBatch

        members = [reference] + [st.scorer for st in rows]
        if self._batch is None or self._batch.members != members:
            self._leave_batch()
            self._batch = HFBatch(members)
        logits = self._batch.step([ids[0]] + [st.queued for st in rows])
        for st, out in zip(rows, logits[1:]):
            st.ready = (len(st.tokens), out)
            st.queued = None
        self.batched_steps += len(rows)
        return logits[0]

    def _leave_batch(self) -> None:
        if self._batch is not None:
            self._batch.leave()
            self._batch = None

    @staticmethod
    def _settle(st: _PaneState) -> None:
        """Wait for the scorer's step in flight, if any (its cache must be still)."""
        if st.pending is not None:
            pending, st.pending = st.pending, None
            pending.result()

    @staticmethod
    def _prune(states: list[_PaneState], ref_logits: dict[int, np.ndarray]) -> None:
        """Drop the reference pane's logits that no pane can still reuse."""
        waiting = [
            len(s.tokens) for s in states[1:] if s.scorer is not None and s.shared and not s.done
        ]
        keep_from = min(waiting, default=len(states[0].tokens) + 1)
        for k in [k for k in ref_logits if k < keep_from]:
            del ref_logits[k]

    def _reverse(self, states: list[_PaneState], finished: int) -> Iterator[ReverseScored]:
        """Score the reference's reply under each finished pane, once both are done."""
        ref = states[0]
        if ref.done is None:
            return
        todo = range(1, len(states)) if finished == 0 else [finished]
        ids = list(ref.done.prompt_ids) + list(ref.done.reply.token_ids)
        first = len(ref.done.prompt_ids) - 1
        if len(ref.done.reply.token_ids) < 1:
            return
        for i in todo:
            st = states[i]
            if st.done is None or st.scorer is None:
                continue
            pane_backend = self._recorders[i - self._offset].backend
            if len(ids) > min(pane_backend.n_ctx, st.scorer.n_ctx):
                continue
            base = st.scorer.score(ids)[first:-1]
            q = pane_backend.score(ids)[first:-1]  # resets its cache; the next turn refills it
            stats = position_stats(base, q, np.asarray(ref.done.reply.token_ids))
            yield ReverseScored(i, summarize(
                stats, model=pane_backend.name, reference=self.reference.name, windows=1
            ))


def open_compared_session(
    models: Sequence[str],
    backends: Sequence[str],
    sampling: SamplingConfig | None = None,
    system: str | None = None,
    progress=None,
) -> tuple[ComparedSession, list]:
    """Load ``models`` (the first is the reference) and start a compared chat.

    A reference that fails to load leaves the other panes running without
    statistics (the session's first event says why); a pane that fails to load
    is the caller's error, as in a plain chat. Returns the session and the
    ``LoadedModel``s (the reference's entry is None when it failed), to close.
    """
    from qdesk.core.errors import QdeskError
    from qdesk.core.models import open_model

    if len(models) < 2 or len(backends) != len(models):
        raise BadInput("a compared chat needs a reference and at least one model, each with a backend")
    try:
        reference = open_model(models[0], backend=backends[0], progress=progress)
        error = None
    except QdeskError as e:
        log.warning("the reference %s failed to load: %s", models[0], e)
        reference, error = None, str(e)
    panes = [open_model(m, backend=b, progress=progress) for m, b in zip(models[1:], backends[1:])]
    session = ComparedSession(
        reference.backend if reference is not None else None, [p.backend for p in panes],
        sampling, system, reference_error=error,
    )
    return session, [reference, *panes]
