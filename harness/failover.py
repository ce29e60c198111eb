"""One fault under load, as the failover tests, `make bench-dr` and the demo run it: the load
starts, the fault hits its members at `fault_at`, and (when asked) they are restored at
`restore_at`; every request is kept with when the fault and the restore actually happened."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xdsfleet.tools.drill.figures import Figures, figures
from xdsfleet.tools.drill.load import Event, Mark, Sample, Target
from xdsfleet.tools.drill.rig import Rig
from xdsfleet.tools.drill.topology import Fault


@dataclass(frozen=True)
class Run:
    samples: list[Sample]
    marks: list[Mark]
    members: tuple[str, ...]

    def at(self, label: str) -> float | None:
        return next((m.at for m in self.marks if m.label == label), None)

    @property
    def fault_at(self) -> float:
        at = self.at("fault")
        assert at is not None
        return at

    @property
    def faulted_at(self) -> float:
        """When the fault had hit every one of its members."""
        at = self.at("fault:done")
        assert at is not None
        return at

    @property
    def failed(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    def figures(self) -> Figures:
        return figures(
            self.samples,
            fault_at=self.fault_at,
            restore_at=self.at("restore"),
            members=self.members,
        )


def under_fault(
    rig: Rig,
    target: Target,
    members: Sequence[str],
    fault: Fault,
    *,
    rate: float,
    seconds: float,
    fault_at: float,
    restore_at: float | None = None,
) -> Run:
    events = [Event(fault_at, "fault", lambda: rig.inject(members, fault))]
    if restore_at is not None:
        events.append(Event(restore_at, "restore", lambda: rig.restore(members)))
    samples, marks = rig.load(target, rate=rate, seconds=seconds, events=events)
    return Run(samples, marks, tuple(members))
