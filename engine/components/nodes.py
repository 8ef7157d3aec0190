"""Reading one node of a replicated component at a time.

Why: after a failover the endpoint answers from whichever node is primary now, so what a
replica or a rejoined old primary holds can only be judged by reading that node itself.
The replicated kinds share this view; the Cluster kind reads its shard its own way.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Self

from engine.errors import ComponentError

if TYPE_CHECKING:
    from engine.fingerprint import Fingerprint
    from engine.runtime.topology import Topology


class NodeViews:
    """Mixin for component kinds whose service is a :class:`Topology` of nodes."""

    instance: str
    service: Any
    topology: Topology

    if TYPE_CHECKING:

        def fingerprint(self) -> Fingerprint: ...

    def on_node(self, node: str) -> Self:
        """This component bound to one node instead of the endpoint: to read what a replica holds."""
        view = copy.copy(self)
        view.service = self.topology.node(node)
        return view

    def node_fingerprints(self, node: str) -> tuple[Fingerprint, Fingerprint]:
        """The primary's fingerprint and ``node``'s, each read on its own node (rejoin fidelity).

        Not through the endpoint: an old primary back on its own would answer it too.
        """
        primary = self.topology.primary()
        if primary is None:
            raise ComponentError(f"{getattr(self, 'name', 'component')} {self.instance!r}: no node answers as primary")
        return self.on_node(primary).fingerprint(), self.on_node(node).fingerprint()
