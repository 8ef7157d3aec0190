"""Progress on the terminal: a live line with a spinner and the time spent so far.

A restore of a large database can take many minutes; a frozen terminal invites Ctrl-C
at the worst moment. On a terminal the current step is shown live with its elapsed
time; finished steps print as permanent lines above it. Off a terminal (CI logs, pipes)
only the permanent lines are written, so logs stay readable and diffable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn


class StepDisplay:
    """One live "current step" line, or plain lines when not on a terminal."""

    def __init__(self, console: Console, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self.live = console.is_terminal and not quiet
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> StepDisplay:
        if self.live:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No live line while the user is asked something (a confirmation prompt)."""
        if self._progress is None:
            yield
            return
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
        self._progress.stop()
        try:
            yield
        finally:
            self._progress.start()

    def begin(self, text: str) -> None:
        """A new step is running; the previous live one (if any) is over."""
        if self.quiet:
            return
        if self._progress is None:
            self.console.print(f"[dim]…[/dim] {escape(text)}", highlight=False)
            return
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(escape(text))

    def end(self, line: str) -> None:
        """The running step finished: drop the live line, print ``line`` (rich markup) for good."""
        if self.quiet:
            return
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
        self.console.print(line, highlight=False)
