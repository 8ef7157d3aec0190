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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID


class StepDisplay:
    """One live "current step" line, or plain lines when not on a terminal."""

    def __init__(self, console: Console, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self.live = not quiet and console.is_terminal  # a quiet display never asks (nor makes the console)
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}  # live steps by name: restores may run side by side

    def __enter__(self) -> StepDisplay:
        if self.live:
            # Imported here: every command opens a display, few of them on a terminal.
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

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
        for task in self._tasks.values():
            self._progress.remove_task(task)
        self._tasks.clear()
        self._progress.stop()
        try:
            yield
        finally:
            self._progress.start()

    def begin(self, text: str) -> None:
        """A new step is running (beside others, when restores run in parallel)."""
        if self.quiet:
            return
        if self._progress is None:
            self.console.print(f"[dim]…[/dim] {_escape(text)}", highlight=False)
            return
        if text in self._tasks:
            self._progress.remove_task(self._tasks.pop(text))
        self._tasks[text] = self._progress.add_task(_escape(text))

    def end(self, line: str, text: str | None = None) -> None:
        """Step ``text`` (the only live one, if not given) finished: print ``line`` (rich markup) for good."""
        if self.quiet:
            return
        if self._progress is not None:
            key = text if text is not None else next(iter(self._tasks), None)
            if key is not None and key in self._tasks:
                self._progress.remove_task(self._tasks.pop(key))
        self.console.print(line, highlight=False)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
