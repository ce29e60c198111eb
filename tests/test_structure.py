"""The import contracts cover the whole package: no module escapes them by sitting outside a layer.

import-linter (`make lint`) checks what the contracts say; this checks that they say something
about every module, so a new folder cannot quietly live outside the architecture.
"""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path
from typing import Any

import xdsfleet

ROOT = Path(__file__).resolve().parent.parent


def contracts() -> list[dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found: list[dict[str, Any]] = config["tool"]["importlinter"]["contracts"]
    return found


def layer_packages() -> list[str]:
    (layers,) = [c for c in contracts() if c["type"] == "layers"]
    (container,) = layers["containers"]
    return [
        f"{container}.{name.strip()}" for layer in layers["layers"] for name in layer.split("|")
    ]


def package_modules() -> list[str]:
    return [
        info.name
        for info in pkgutil.walk_packages(xdsfleet.__path__, prefix="xdsfleet.")
        # Generated protobuf code is checked by its own test, not by layering.
        if not info.name.endswith(("_pb2", "_pb2_grpc"))
    ]


def test_every_module_of_the_package_is_in_a_layer() -> None:
    layers = layer_packages()
    outside = [
        module
        for module in package_modules()
        if not any(module == layer or module.startswith(layer + ".") for layer in layers)
    ]
    assert outside == []


def test_the_pure_layers_may_not_log_measure_or_do_io() -> None:
    (purity,) = [c for c in contracts() if c["name"].startswith("Pure layers")]
    assert set(purity["source_modules"]) == {
        "xdsfleet.model",
        "xdsfleet.documents",
        "xdsfleet.translate",
        "xdsfleet.cache",
    }
    assert {"structlog", "prometheus_client", "xdsfleet.telemetry", "grpc", "asyncio"} <= set(
        purity["forbidden_modules"]
    )
    # Indirect imports count too: a pure module may not reach I/O through another module.
    assert not purity.get("allow_indirect_imports", False)
