"""How a submitter shows where a study is: bars on a terminal, a line per event in a file or a CI log.

On a terminal (stderr is one) the study's bar (runs or trials ended) and one bar per active run (its step,
speed, time left, last loss), redrawn at every poll. Anywhere else a redrawn bar is a new line every second
(thousands for a small study), so there a line when a run is launched, one when it ends, and a summary every
``SUMMARY_S``. ``Progress`` is the one place that decides; ``Dispatcher.drive`` feeds it.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Protocol

from tqdm import tqdm

if TYPE_CHECKING:
    from ablate.study import Run

SUMMARY_S = 60.0  # between two summary lines when stderr is not a terminal


class Active(Protocol):
    """An active run as the dispatcher holds it: the run, and its job (None: an earlier submitter's)."""

    run: Run
    job: object | None


def on_terminal() -> bool:
    """Whether progress goes to a terminal (bars) rather than a file or a pipe (lines)."""
    return sys.stderr.isatty()


def say(line: str) -> None:
    """A line on stderr that leaves the bars (if any) where they are."""
    tqdm.write(line, file=sys.stderr)


class Progress:
    """``with Progress(...) as p``: ``p.count(done, **postfix)`` and ``p.show(active)`` at every poll,
    ``p.ended(run, outcome)`` for every run that ended. ``shown=False``: nothing at all."""

    def __init__(self, desc: str, total: int, done: int, unit: str, evaluate: bool, shown: bool = True):
        self.desc, self.total, self.done, self.unit, self.evaluate = desc, total, done, unit, evaluate
        self.postfix: dict[str, object] = {}
        self.bars = shown and on_terminal()
        self.lines = shown and not self.bars
        self.study_bar = tqdm(total=total, initial=done, desc=desc, unit=unit) if self.bars else None
        self.run_bars: dict[str, tqdm] = {}
        self.seen: set[str] = set()  # active runs already announced (lines)
        self.summarized = time.monotonic()

    def count(self, done: int, **postfix: object) -> None:
        """How many of ``total`` have ended, and what the study's bar (or summary) says beside it."""
        self.done, self.postfix = done, postfix
        if self.study_bar is not None:
            self.study_bar.n = done
            self.study_bar.set_postfix(postfix, refresh=False)
            self.study_bar.refresh()

    def ended(self, run: Run, outcome: str) -> None:
        if self.lines:
            say(f"{self.desc}: {_name(run)} {outcome}")
        self.seen.discard(run.key)

    def show(self, active: dict[str, Active]) -> None:
        """The runs now active: their bars, or a line for each new one and the summary when it is due."""
        if self.bars:
            self._draw(active)
        elif self.lines:
            for key in active.keys() - self.seen:  # a job of an earlier submitter is followed, not launched
                say(f"{self.desc}: {_name(active[key].run)} {'launched' if active[key].job else 'followed'}")
            self.seen = set(active)
            if time.monotonic() - self.summarized >= SUMMARY_S:
                self.summarized = time.monotonic()
                say(self.summary(active))

    def summary(self, active: dict[str, Active]) -> str:
        """One line: how many have ended, the postfix, and each active run's step."""
        steps = ", ".join(f"{_name(a.run)} step {a.run.progress()[0]}/{a.run.config['train']['steps']}"
                          for a in active.values())
        postfix = "".join(f", {k}={v}" for k, v in self.postfix.items())
        return f"{self.desc}: {self.done}/{self.total} {self.unit}s ended{postfix}{f'; {steps}' if steps else ''}"

    def _draw(self, active: dict[str, Active]) -> None:
        """A bar per active run under the study's bar; bars come and go with the runs."""
        for key in [k for k in self.run_bars if k not in active]:
            self.run_bars.pop(key).close()
        for key, a in active.items():
            step, loss = a.run.progress()
            bar = self.run_bars.get(key)
            if bar is None:  # starts where the run is (a resumed run), so its speed counts only new steps
                bar = self.run_bars[key] = tqdm(total=a.run.config["train"]["steps"], initial=step, unit="step",
                                                desc=f"  {_name(a.run)}", leave=False, dynamic_ncols=True)
            if step >= bar.total:  # trained: the job goes on with the final evaluation (or ends)
                if bar.n < bar.total:
                    bar.update(bar.total - bar.n)
                bar.set_postfix_str("evaluating" if self.evaluate else "finishing", refresh=False)
                bar.refresh()
                continue
            bar.set_postfix_str(f"loss={loss:.3f}" if loss is not None else "starting", refresh=False)
            bar.update(step - bar.n)  # tqdm's smoothed speed and time left
            bar.refresh()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars:  # closes every bar, also when the submitter is interrupted
            self._draw({})
            self.study_bar.close()


def _name(run: Run) -> str:
    return f"{run.label} s{run.seed}"
