"""Recovery plans: the order ``depends_on`` gives, run in parallel where nothing depends.

A whole-system recovery is a graph, not a list: the database and the cache can come back
at the same time, the application only after both. Restoring one after another makes the
stack's RTO the sum of every restore; restoring independent components together makes it
the longest chain of dependent ones, the **critical path**, which is what a recovery plan
has to shorten. Components run at most ``parallel`` at a time; one whose dependency did
not come back is not attempted (it could not work), and says why.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait


def topological(names: Sequence[str], deps: Mapping[str, set[str]]) -> list[str]:
    """``names`` with each after what it depends on (among ``names``), otherwise in the given order.

    Validation refuses cycles; one that gets here anyway is broken at the first name met.
    """
    wanted = set(names)
    out: list[str] = []
    done: set[str] = set()

    def visit(name: str, path: frozenset[str]) -> None:
        if name in done or name in path:
            return
        for dep in sorted(deps.get(name, set()) & wanted):
            visit(dep, path | {name})
        done.add(name)
        out.append(name)

    for name in names:
        visit(name, frozenset())
    return out


def cycle(deps: Mapping[str, set[str]]) -> list[str] | None:
    """A dependency cycle (``a → b → a``), or None."""
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def walk(name: str, trail: list[str]) -> list[str] | None:
        if state.get(name) == 1:
            return [*trail[trail.index(name) :], name]
        if state.get(name) == 2:
            return None
        state[name] = 1
        for dep in sorted(deps.get(name, set())):
            found = walk(dep, [*trail, name])
            if found:
                return found
        state[name] = 2
        return None

    for name in sorted(deps):
        found = walk(name, [])
        if found:
            return found
    return None


def run(
    names: Sequence[str],
    deps: Mapping[str, set[str]],
    parallel: int,
    work: Callable[[str], bool],
    skip: Callable[[str, list[str]], None],
) -> None:
    """Call ``work(name)`` for each name once its dependencies (among ``names``) succeeded.

    ``work`` returns whether the component came back; ``skip(name, failed)`` is called
    instead for a component some of whose dependencies did not. At most ``parallel`` run
    at once; with 1, in topological order on this thread.
    """
    order = topological(names, deps)
    needs = {n: deps.get(n, set()) & set(names) for n in order}
    if parallel <= 1:
        ok: set[str] = set()
        for name in order:
            failed = sorted(d for d in needs[name] if d not in ok)
            if failed:
                skip(name, failed)
            elif work(name):
                ok.add(name)
        return
    _run_parallel(order, needs, parallel, work, skip)


def _run_parallel(
    order: list[str],
    needs: dict[str, set[str]],
    parallel: int,
    work: Callable[[str], bool],
    skip: Callable[[str, list[str]], None],
) -> None:
    ok: set[str] = set()
    finished: set[str] = set()
    lock = threading.Lock()
    running: dict[Future[bool], str] = {}
    pending = list(order)
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="restore") as pool:
        while pending or running:
            for name in list(pending):
                if len(running) >= parallel:
                    break
                if not needs[name] <= finished:
                    continue
                pending.remove(name)
                failed = sorted(d for d in needs[name] if d not in ok)
                if failed:
                    skip(name, failed)
                    finished.add(name)
                    continue
                running[pool.submit(work, name)] = name
            if not running:
                blocked = [n for n in pending if not needs[n] <= finished]
                if blocked and len(blocked) == len(pending) and not any(needs[n] <= finished for n in pending):
                    for name in blocked:  # a cycle validation should have refused: never hang on it
                        skip(name, sorted(needs[name] - finished))
                        finished.add(name)
                    pending.clear()
                continue  # skips freed others; look again
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                with lock:
                    finished.add(name)
                    if future.result():
                        ok.add(name)


def critical_path(rto: Mapping[str, float | None], deps: Mapping[str, set[str]]) -> list[str]:
    """The chain that set the stack's RTO: from the last component to recover back through
    the dependency of each that recovered last (first of the chain first)."""
    timed = {n: t for n, t in rto.items() if t is not None}
    if not timed:
        return []
    chain = [max(timed, key=lambda n: timed[n])]
    while True:
        before = [d for d in deps.get(chain[-1], set()) if d in timed and d not in chain]
        if not before:
            return chain[::-1]
        chain.append(max(before, key=lambda n: timed[n]))
