"""Hold a scheduler's rounds for as long as a test wants: a real model of its protocol whose call blocks,
so a request's sequence stays busy (queue timeouts) or a request waits for a round (cancellation)."""

from __future__ import annotations

import threading

from relaygen_integrations.core.scheduler import Job


class RoundGate:
    def __init__(self):
        self.entered, self.open = threading.Event(), threading.Event()

    def run(self, jobs):
        self.entered.set()
        self.open.wait(30)
        for job in jobs:
            job.result = []
        return 0


def hold_rounds(scheduler) -> RoundGate:
    """Block the scheduler's thread in a round of its own; ``gate.open.set()`` lets it go on."""
    gate = RoundGate()
    threading.Thread(target=scheduler.submit, args=(Job(gate, -1, 0, []),), daemon=True).start()
    assert gate.entered.wait(10)
    return gate
