"""`python -m conformance --upstream DIR [TEST ...]`: replay the upstream Gateway API HTTPRoute
conformance tests through `xdsfleet serve` and real Envoys, and print pass/fail per test and the
totals (all applicable, core profile).

DIR is the `conformance/` folder of a kubernetes-sigs/gateway-api checkout (its `tests/`,
`base/manifests.yaml` and `utils/suite/`). Nothing of it is kept in this repository.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conformance.gocases import GoTest, constants, parse_file, unread
from conformance.hand import convert
from conformance.run import Outcome, is_core, run

# Tests whose checks are not replayed here, and why (they are counted apart, not as passes).
NOT_REPLAYED = {
    "status": "no cases read: requests built in code of its own",
    "custom": "asserts or builds its cases with code of its own (distributions, loops, patches)",
    "protocol": "needs an h2c or WebSocket echo backend (tests/test_envoy_gateway_api.py has both)",
}


def load(upstream: Path) -> list[GoTest]:
    # The suite's constants, and the API's (condition types and reasons) beside conformance/.
    sources = [
        *(upstream / "utils" / "suite").glob("*.go"),
        *(upstream.parent / "apis" / "v1").glob("*.go"),
    ]
    suite = [p.read_text() for p in sorted(sources)]
    known = constants(suite)
    tests: list[GoTest] = []
    for path in sorted((upstream / "tests").glob("httproute-*.go")):
        tests += map(convert, parse_file(path.read_text(), known))
    return tests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__)
    parser.add_argument("--upstream", type=Path, required=True, help="gateway-api conformance/")
    parser.add_argument("tests", nargs="*", help="only these tests (ShortName)")
    parser.add_argument("-v", "--verbose", action="store_true", help="every failing case")
    args = parser.parse_args(argv)
    upstream: Path = args.upstream
    if str(args.upstream) in ("", "."):
        print(
            "no upstream conformance tests given: make conformance GATEWAY_API=<a"
            " kubernetes-sigs/gateway-api checkout>/conformance; nothing measured",
            file=sys.stderr,
        )
        return 2
    if not (upstream / "tests").is_dir() or not (upstream / "base" / "manifests.yaml").is_file():
        print(
            f"no upstream conformance tests at {upstream} (want tests/ and base/manifests.yaml"
            " of kubernetes-sigs/gateway-api's conformance/): nothing measured",
            file=sys.stderr,
        )
        return 2
    tests = [t for t in load(upstream) if not args.tests or t.name in args.tests]
    if not (upstream.parent / "apis" / "v1").is_dir():
        # Condition types and reasons are the API's constants: without them, no status checks.
        print(
            f"no {upstream.parent / 'apis' / 'v1'}: status assertions not checked", file=sys.stderr
        )
        for test in tests:
            test.status = []
    outcomes: list[Outcome] = []
    for test in tests:
        computed = any(unread(c.expected) for c in test.cases)
        if test.custom or computed or "BackendProtocol" in test.name:
            why = (
                "status" if not test.cases else "custom" if test.custom or computed else "protocol"
            )
            outcomes.append(Outcome(test, skipped=NOT_REPLAYED[why]))
        else:
            try:
                outcomes.append(run(test, upstream))
            except (RuntimeError, TimeoutError) as error:  # serve or Envoy did not come up
                first = str(error).splitlines()[0]
                outcomes.append(Outcome(test, failures=[f"could not run: {first}"]))
        _print(outcomes[-1], args.verbose)
    _totals(outcomes)
    return 0 if all(o.ok or o.skipped for o in outcomes) else 1


def _print(outcome: Outcome, verbose: bool) -> None:
    test = outcome.test
    profile = "core" if is_core(test) else "extended"
    if outcome.skipped:
        print(f"SKIP {test.name} ({profile}): {outcome.skipped}", flush=True)
        return
    state = "PASS" if outcome.ok else "FAIL"
    cases = f"{outcome.passed}/{outcome.passed + len(outcome.failures)} checks"
    hand = ", cases converted by hand" if test.hand else ""
    print(f"{state} {test.name} ({profile}{hand}): {cases}", flush=True)
    for failure in outcome.failures if verbose else outcome.failures[:3]:
        print(f"     {failure}", flush=True)


def _totals(outcomes: list[Outcome]) -> None:
    run_ = [o for o in outcomes if not o.skipped]
    core = [o for o in run_ if is_core(o.test)]
    print(
        f"\n{sum(o.ok for o in run_)} of {len(run_)} replayed tests pass;"
        f" core profile {sum(o.ok for o in core)} of {len(core)};"
        f" {len(outcomes) - len(run_)} not replayed (requests built in code of their own)"
    )


if __name__ == "__main__":
    sys.exit(main())
