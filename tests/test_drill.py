"""`xdsfleet drill` rehearses a failure on a user's own fleet: it passes where the defaults
cover the fault, and exits 1 when the user's policy lets requests fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xdsfleet.sources.files import builtin_fleet_path

pytestmark = pytest.mark.envoy

SHORT = ["--rate", "100", "--seconds", "2.5", "--fault-at", "0.5", "--restore-at", "2"]


def drill(fleet: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "xdsfleet", "drill", "--fleet", str(fleet)]
    argv += ["--gateway", "default/demo", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    shutil.copytree(builtin_fleet_path().parent, tmp_path / "fleet")
    return tmp_path / "fleet" / "fleet.yaml"


def test_a_hung_zone_of_the_built_in_fleet_fails_no_request(fleet: Path) -> None:
    done = drill(fleet, "--member", "zone-b", "--fault", "hang", *SHORT)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "no request failed" in done.stdout
    assert "zone-a" in done.stdout


def test_a_policy_without_retries_or_ejection_fails_requests_and_the_drill_says_so(
    fleet: Path,
) -> None:
    policy = {
        "apiVersion": "xdsfleet.io/v1alpha1",
        "kind": "TrafficPolicy",
        "metadata": {"name": "fragile", "namespace": "default"},
        "spec": {
            "targetRefs": [{"group": "", "kind": "Service", "name": "shop"}],
            "retry": {"attempts": 0},
            "outlierDetection": {"enabled": False},
            "healthCheck": {"enabled": False},
        },
    }
    (fleet.parent / "routes" / "fragile.yaml").write_text(yaml.safe_dump(policy))
    done = drill(fleet, "--member", "zone-b", "--fault", "kill", *SHORT)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "requests failed" in done.stdout


def test_a_cut_without_network_namespaces_is_refused(fleet: Path) -> None:
    done = drill(fleet, "--member", "zone-b", "--fault", "cut", "--loopback", *SHORT)

    assert done.returncode == 2
    assert "a cut needs network namespaces" in done.stderr


def test_an_unknown_member_is_refused_before_anything_starts(fleet: Path) -> None:
    done = drill(fleet, "--member", "nowhere", "--fault", "kill")

    assert done.returncode == 2
    assert "no member nowhere" in done.stderr
