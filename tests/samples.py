"""Reading what the process's Prometheus registry holds, in tests: one sample's value."""

from __future__ import annotations

from prometheus_client import REGISTRY


def sample(name: str, **labels: str) -> float:
    """The value of the sample `name` with these labels; 0 when it was never observed (a
    counter or gauge with labels has no sample until the first time it is set)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0
