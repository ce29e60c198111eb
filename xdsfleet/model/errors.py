"""Input problems, each naming where it was found: file, object and field."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    """An error makes the input invalid; a warning (a certificate about to expire) does not."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the input. `obj` is `Kind NAMESPACE/NAME` (or `Kind NAME`), `field` a
    dotted path such as `spec.ports[0].port`; either may be empty when the whole file is at
    fault (for instance YAML that does not parse)."""

    file: str
    obj: str
    field: str
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.file, self.obj, self.field) if p)
        return f"{where}: {self.message}"


class InvalidInput(Exception):
    """Raised with every problem found in one input, so a user sees them all at once."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = tuple(problems)
