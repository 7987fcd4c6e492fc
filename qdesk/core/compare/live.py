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

Branches (``branch``, ``follow_reference``) regenerate one pane's reply from a
token on; the tokens before it keep their agreement, and the scorer follows
the new prefix, so agreement continues on the branch. Everything lands in the
session's ``Transcript`` (``transcript``), which the GUI draws and
``conversation_io`` saves. A pane whose model fails ends with ``PaneFailed``
while the others go on; a scorer that fails only ends that pane's agreement.
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
from qdesk.core.chat.session import (
    ChatSession,
    PaneDone,
    PaneFailed,
    PaneJob,
    PaneToken,
    error_message,
)
from qdesk.core.chat.stats import DistributionStats, token_distribution
from qdesk.core.chat.transcript import Transcript
from qdesk.core.compare.agreement import Agreement, ReplyAgreement, agreement, summarize_reply
from qdesk.core.compare.divergence import DivergenceReport, summarize
from qdesk.core.compare.llama_stats import position_stats
from qdesk.core.errors import BadInput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComparedToken:
    """A pane's token; agreement is None for the reference and for panes
    compared with nothing (another vocabulary, no reference). ref_top: the
    reference's own top-k (and margin, entropy) on this pane's prefix, with
    the agreement."""

    pane: int
    event: TokenEvent
    agreement: Agreement | None
    ref_top: DistributionStats | None = None


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


ComparedEvent = ComparedToken | ComparedDone | ReverseScored | PaneNotice | PaneFailed


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
        self.running = False  # generating in this action (not done, not failed)
        self.branch = None  # the transcript Branch being written
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
        transcript: Transcript | None = None,
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
        self.session = ChatSession(self._recorders, sampling, system, transcript)
        self._scorers_dropped: str | None = None  # why the reference is gone, when it is
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

    @sampling.setter
    def sampling(self, value: SamplingConfig) -> None:
        self.session.sampling = value

    @property
    def transcript(self) -> Transcript:
        """Turns and branches in session pane numbers (the user's pane minus
        one when the reference failed to load)."""
        return self.session.transcript

    @property
    def offset(self) -> int:
        """User pane = session pane + offset (1 when there is no reference)."""
        return self._offset

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
        yield from self.run(self.session.start_turn(prompt), cancel)

    def regenerate(self, cancel: threading.Event | None = None) -> Iterator[ComparedEvent]:
        """The last turn again on every pane (new branches, the next seed)."""
        yield from self.run(self.session.start_regenerate(), cancel)

    def branch(
        self, pane: int, index: int, token: int, cancel: threading.Event | None = None,
        kind: str = "alternative",
    ) -> Iterator[ComparedEvent]:
        """Continue pane ``pane``'s last reply from ``token`` at position ``index``."""
        job = self.session.start_branch(pane - self._offset, index, token, kind)
        yield from self.run([job], cancel)

    def follow_reference(
        self, pane: int, index: int, cancel: threading.Event | None = None
    ) -> Iterator[ComparedEvent]:
        """Force pane ``pane`` onto the reference's top-1 at ``index`` and continue."""
        a = self.reference_choice(pane, index)
        yield from self.branch(pane, index, a, cancel, kind="follow")

    def reference_choice(self, pane: int, index: int) -> int:
        """The reference's top-1 at token ``index`` of pane ``pane``'s shown
        last reply; BadInput where it is the pane's own token or unknown."""
        turn = self.session.transcript.last
        if turn is None or pane < 1 or pane - self._offset >= len(turn.panes):
            raise BadInput("following the reference needs a compared pane's reply")
        branch = turn.panes[pane - self._offset].current
        if not 0 <= index < len(branch.tokens):
            raise BadInput(f"the reply has {len(branch.tokens)} tokens; there is no token {index}")
        a = branch.agreements[index] if index < len(branch.agreements) else None
        if a is None:
            raise BadInput("this pane has no agreement statistics to follow")
        if a.ref_top_id == branch.tokens[index].token_id:
            raise BadInput("here the pane already took the reference's token")
        return a.ref_top_id

    def select_branch(self, pane: int, branch: int, turn: int = -1) -> None:
        self.session.select_branch(pane - self._offset, branch, turn)

    def new_chat(self) -> None:
        self.session.new_chat()

    def detach(self, pane: int, reason: str) -> None:
        """Pane ``pane``'s model is gone; a reply in flight ends at its next
        token. The reference gone ends every pane's agreement (the scorers run
        its weights). Safe to call from another thread."""
        if pane == 0 and self.reference is not None:
            self._scorers_dropped = reason
            self.session.detach(0, reason)
        elif pane - self._offset >= 0:
            self.session.detach(pane - self._offset, reason)

    def run(self, jobs: list[PaneJob], cancel: threading.Event | None = None) -> Iterator[ComparedEvent]:
        """Run planned jobs (``ChatSession.start_*``) with live agreement."""
        n = len(self._scorers)
        states = [_PaneState(self._scorers[i]) for i in range(n)]
        for job in jobs:
            st = states[job.pane + self._offset]
            st.running, st.branch = True, job.branch
            st.prompt = list(job.prompt_ids)
            st.tokens = list(job.prefix)
            st.values = job.branch.agreements  # the prefix's agreement is kept
        turn = self.session.transcript.last
        for i, st in enumerate(states):
            # A pane this action does not run keeps its shown reply to the
            # turn: the reverse score pairs it with the panes that do run.
            shown = turn.panes[i - self._offset].current if turn and i >= self._offset else None
            if not st.running and shown is not None and shown.reply is not None:
                st.branch = shown
                st.prompt, st.tokens = list(shown.prompt_ids), shown.token_ids
                st.done = ComparedDone(i, shown.reply, shown.prompt_ids, shown.summary)
        ref_logits: dict[int, np.ndarray] = {}  # the reference pane's logits per step
        if self.overlap and self._pool is None and any(self._scorers):
            self._pool = ThreadPoolExecutor(
                max_workers=sum(x is not None for x in self._scorers),
                thread_name_prefix="qdesk-scorer",
            )
        self._states = states
        try:
            yield from self._run(jobs, cancel, states, ref_logits)
        finally:
            self._leave_batch()
            for st in states:  # never leave a scorer running past the reply
                self._settle_quietly(st)
            self._states = []
            # The scorer threads end with the reply: a thread that once computed
            # with two threads keeps an OpenMP team, and while it lives every
            # other stream's team waits like OMP_WAIT_POLICY=PASSIVE
            # (the docstring of qdesk.core.threads).
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _run(self, jobs, cancel, states, ref_logits) -> Iterator[ComparedEvent]:
        ref_state = states[0]
        k_top = self.session.sampling.stats_top_k
        for ev in self.session.run(jobs, cancel):
            if self._scorers_dropped is not None and any(st.scorer for st in states):
                yield from self._drop_scorers(states)
            pane = ev.pane + self._offset
            st = states[pane]
            if isinstance(ev, PaneToken):
                logits = self._recorders[ev.pane].last
                a = top = None
                if pane == 0:
                    ref_logits[len(st.tokens)] = logits
                elif st.scorer is not None:
                    try:
                        ref = self._ref_logits(st, ref_state, ref_logits)
                    except Exception as e:  # the pane goes on without agreement
                        yield self._scorer_failed(st, pane, e)
                    else:
                        a = agreement(ref, logits, ev.event.token_id)
                        top = token_distribution(ref, k_top)[0]
                st.values.append(a)
                st.branch.ref_top.append(top)
                st.tokens.append(ev.event.token_id)
                if pane != 0 and st.scorer is not None and not ev.event.is_end:
                    try:
                        self._step_ahead(st, ref_state)
                    except Exception as e:
                        yield self._scorer_failed(st, pane, e)
                self._prune(states, ref_logits)
                yield ComparedToken(pane, ev.event, a, top)
            elif isinstance(ev, PaneDone):
                self._settle_quietly(st)
                st.running = False
                st.prompt = list(ev.prompt_ids)
                scored = [(a, t) for a, t in zip(st.values, st.tokens) if a is not None]
                summary = (
                    summarize_reply([a for a, _ in scored], [t for _, t in scored])
                    if pane != 0 and scored else None
                )
                st.branch.summary = summary
                st.done = ComparedDone(pane, ev.reply, ev.prompt_ids, summary)
                yield st.done
                if pane == 0:
                    ref_logits.clear()  # not needed past the reply
                if self.reverse and self.reference is not None:
                    yield from self._reverse(states, pane)
            elif isinstance(ev, PaneFailed):
                self._settle_quietly(st)
                st.running = False
                if pane == 0:
                    ref_logits.clear()
                yield PaneFailed(pane, ev.message)

    def _scorer_failed(self, st: _PaneState, pane: int, e: Exception) -> PaneNotice:
        log.warning("the reference's scorer for pane %d failed", pane, exc_info=True)
        self._settle_quietly(st)
        self._leave_batch_quietly()
        self._scorers[pane] = st.scorer = None  # closed with the others at the end
        return PaneNotice(pane, f"agreement with the reference stopped: {error_message(e)}")

    def _drop_scorers(self, states: list[_PaneState]) -> Iterator[PaneNotice]:
        self._leave_batch_quietly()
        for i, st in enumerate(states):
            if st.scorer is None:
                continue
            self._settle_quietly(st)
            try:
                st.scorer.close()
            except Exception:
                log.warning("closing a scorer failed", exc_info=True)
            self._scorers[i] = st.scorer = None
            yield PaneNotice(i, f"no agreement from here on: {self._scorers_dropped}")

    def _settle_quietly(self, st: _PaneState) -> None:
        try:
            self._settle(st)
        except Exception:  # it failed in its worker; the next step says so
            log.warning("a scorer step failed", exc_info=True)

    def _leave_batch_quietly(self) -> None:
        try:
            self._leave_batch()
        except Exception:
            self._batch = None
            log.warning("leaving a batch failed", exc_info=True)

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
            and ref.tokens[k - 1 : k] == st.tokens[k - 1 : k] and ref.running
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
        if not self.batch or not ref.running or not hasattr(reference, "can_batch_with"):
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
        rows = [st for st in self._states[1:] if st.queued is not None and st.scorer is not None]
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
            if st.done is None or st.scorer is None or (i - self._offset) in self.session.detached:
                continue
            pane_backend = self._recorders[i - self._offset].backend
            if len(ids) > min(pane_backend.n_ctx, st.scorer.n_ctx):
                continue
            try:
                base = st.scorer.score(ids)[first:-1]
                q = pane_backend.score(ids)[first:-1]  # resets its cache; the next turn refills it
            except Exception as e:  # a figure is missing; the chat goes on
                log.warning("the reverse score of pane %d failed", i, exc_info=True)
                yield PaneNotice(i, f"the reference's reply could not be scored: {error_message(e)}")
                continue
            stats = position_stats(base, q, np.asarray(ref.done.reply.token_ids))
            report = summarize(
                stats, model=pane_backend.name, reference=self.reference.name, windows=1
            )
            if st.branch is not None:
                st.branch.reverse = report
            yield ReverseScored(i, report)


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
