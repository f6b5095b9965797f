"""Signals deferred to a step boundary, so that a preempted or timed-out job checkpoints the step it is at.

SLURM warns a job ``signal_delay_s`` before its limit (or a preemption) with a signal, and submitit's handler
for it requeues the job and exits at once: every step since the last periodic checkpoint would be trained
again. ``StepSignals`` catches those signals instead and only remembers them; the training loop finishes its
step, saves a checkpoint there, and ``hand_over`` then calls the handler that was installed before (submitit's,
which requeues and exits). Once restored, the previous handlers are back, so a signal during the final
evaluation goes straight to them.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


class StepSignals:
    """``s = StepSignals(signals); s.install()`` ... ``if s.caught: <checkpoint>; s.hand_over()`` ...
    ``s.restore()``."""

    def __init__(self, signals: tuple[signal.Signals, ...]):
        self.signals = signals
        self.caught: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():  # Python runs handlers there only
            self._previous = {s: signal.signal(s, self._catch) for s in self.signals}

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def hand_over(self) -> None:
        """Restore the previous handlers and call the one of the signal caught, if one was (it may exit or raise)."""
        caught, self.caught = self.caught, None
        previous = self._previous.get(caught)
        self.restore()
        if callable(previous):
            previous(caught, None)
        elif previous == signal.SIG_DFL:
            signal.raise_signal(caught)

    def _catch(self, signum: int, frame: FrameType | None) -> None:
        self.caught = signal.Signals(signum)
