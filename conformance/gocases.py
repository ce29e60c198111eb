"""Read the upstream Gateway API conformance tests (Go source) as data: each test's name,
features, manifests, and the requests it sends with the answers it expects.

The upstream suite is Go; its cases are composite literals (`http.ExpectedResponse{...}`)
inside test functions. This module tokenizes the Go text and parses those literals into plain
dicts, and guesses which Gateway each case is sent to by following the `gwNN`/`gwAddr`
variables the tests use. It does not run Go and does not understand control flow: a case it
cannot place is reported, never guessed silently. Nothing here is copied from upstream; the
files are read from the path the user gives.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Any

INFRA_NAMESPACE = "InfrastructureNamespace"
# `Name = "value"` or `Name Type = "value"` (the API's typed constants: condition reasons).
CONSTANT = re.compile(r'^\s*([A-Z][A-Za-z0-9]*)\s*(?:[A-Z][A-Za-z0-9]*\s*)?=\s*"([^"]*)"', re.M)
# metav1's condition statuses (apimachinery is not in the checkout).
CONDITION_STATUSES = {
    "ConditionTrue": "True",
    "ConditionFalse": "False",
    "ConditionUnknown": "Unknown",
}
TOKEN = re.compile(
    r"""(?P<space>\s+)|(?P<comment>//[^\n]*|/\*.*?\*/)|(?P<string>"(?:\\.|[^"\\])*"|`[^`]*`)"""
    r"""|(?P<number>\d+(?:\.\d+)?)|(?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"""
    r"""|(?P<op>:=|\.\.\.|[{}()\[\],:&=*+\-<>!;.])""",
    re.S,
)


@dataclass(frozen=True)
class Tok:
    kind: str
    text: str
    at: int


def tokenize(source: str) -> list[Tok]:
    out: list[Tok] = []
    for m in TOKEN.finditer(source):
        kind = m.lastgroup or ""
        if kind in ("space", "comment"):
            continue
        out.append(Tok(kind, m.group(), m.start()))
    return out


@dataclass(frozen=True)
class Var:
    """A Go identifier used as a value (resolved later, when it can be)."""

    name: str


UNREAD = Var("?")  # a value computed by the test's code


def unread(value: Any) -> bool:
    """Whether a case holds a value the test computes at run time."""
    if isinstance(value, Var):
        return True
    if isinstance(value, dict):
        return any(map(unread, value.values()))
    if isinstance(value, list):
        return any(map(unread, value))
    return False


@dataclass
class Case:
    expected: dict[str, Any]
    gateway: str | None  # "namespace/name", None when it cannot be told
    section: str | None  # the listener the address was asked for (its port), if named
    port: str | None  # a port the test joins to the Gateway's host, if any
    tls: bool  # sent with the TLS helper
    sni: str | None = None  # the server name the TLS helper is given
    # Objects the test deleted before this case: (kind, namespace, name).
    deleted: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class StatusCheck:
    """One status assertion: `condition` (the route's condition for that Gateway), `accepted`
    (whether any parent may be Accepted), or `routes` (routes attached to the Gateway)."""

    what: str
    route: str | None  # namespace/name
    gateway: str | None  # namespace/name
    condition: tuple[str, str, str] | None = None  # type, status, reason ("" = any)
    want: int | bool | None = None


@dataclass
class GoTest:
    name: str
    description: str
    features: list[str]
    manifests: list[str]
    cases: list[Case] = field(default_factory=list)
    custom: bool = False  # asserts with code of its own (distributions, mirrors, timings)
    hand: bool = False  # its cases were converted by hand (conformance/hand.py)
    status: list[StatusCheck] = field(default_factory=list)
    # backend -> share of requests, when the test checks a weighted distribution
    weights: dict[str, float] = field(default_factory=dict)


def constants(sources: list[str]) -> dict[str, str]:
    """The suite's string constants (namespaces, backend names) from its Go sources."""
    found = {m[1]: m[2] for source in sources for m in CONSTANT.finditer(source)}
    return {**CONDITION_STATUSES, **found}


class Parser:
    def __init__(self, toks: list[Tok], variables: dict[str, Any], known: dict[str, str]) -> None:
        self.toks = toks
        self.variables = variables
        self.known = known

    def value(self, i: int) -> tuple[Any, int]:
        t = self.toks[i]
        if t.kind == "string":
            return _unquote(t.text), i + 1
        if t.kind == "number":
            return (float(t.text) if "." in t.text else int(t.text)), i + 1
        if t.text == "&":
            return self.value(i + 1)
        if t.text == "{":
            return self.composite(i)
        if t.text in ("[", "map", "*") or t.kind == "ident":
            # A type (maybe map[..]..., []T) then a literal, or an identifier / call.
            j = self._skip_type(i)
            if j < len(self.toks) and self.toks[j].text == "{" and (j > i + 1 or _is_type(t)):
                return self.composite(j)
            if t.kind == "ident":
                if j < len(self.toks) and self.toks[j].text == "(":
                    end = _matching(self.toks, j)
                    if _next_comma(self.toks, j + 1, end) == end and end > j + 1:
                        # One argument: a conversion such as string(ns) is its argument.
                        with contextlib.suppress(ValueError):
                            inner, after = self.value(j + 1)
                            if after == end:
                                return inner, end + 1
                    return _call(t.text, self.toks[j + 1 : end]), end + 1
                return self.resolve(t.text), i + 1
        raise ValueError(f"cannot read a value at {t.text!r}")

    def resolve(self, name: str) -> Any:
        short = name.rsplit(".", 1)[-1]
        if "." in name and short in self.known:
            return self.known[short]
        if name in ("true", "false"):
            return name == "true"
        if name == "nil":
            return None
        return self.variables.get(name, Var(name))

    def _skip_type(self, i: int) -> int:
        t = self.toks[i]
        if t.text == "[":
            return self._skip_type(_matching(self.toks, i, "[", "]") + 1)
        if t.text == "*":
            return self._skip_type(i + 1)
        if t.text == "struct":  # an anonymous struct type: its field list
            return _matching(self.toks, i + 1) + 1
        if t.text == "map":
            return self._skip_type(_matching(self.toks, i + 1, "[", "]") + 1)
        return i + 1

    def composite(self, i: int) -> tuple[Any, int]:
        assert self.toks[i].text == "{"
        end = _matching(self.toks, i)
        j = i + 1
        keyed: dict[str, Any] = {}
        items: list[Any] = []
        while j < end:
            key = None
            if self.toks[j + 1].text == ":" and self.toks[j].kind in ("ident", "string"):
                key = self.toks[j].text
                if self.toks[j].kind == "string":
                    key = _unquote(key)
                elif "." in key and isinstance(self.resolve(key), str):
                    key = self.resolve(key)  # a map keyed by constants
                j += 2
            try:
                item, j = self.value(j)
            except ValueError:
                item, j = UNREAD, _next_comma(self.toks, j, end)
            if j < end and self.toks[j].text != ",":
                # An expression ("/" + path): computed at run time, not read here.
                item, j = UNREAD, _next_comma(self.toks, j, end)
            if key is None:
                items.append(item)
            else:
                keyed[key] = item
            j += 1 if j < end else 0
        return (keyed if keyed or not items else items), end + 1


def _is_type(t: Tok) -> bool:
    return (t.kind == "ident" and t.text[:1].isupper()) or "." in t.text


def _call(name: str, args: list[Tok]) -> Any:
    if name.endswith("JoinHostPort") and args and args[-1].kind == "string":
        return Var("port:" + _unquote(args[-1].text))
    return Var(name + "()")


def _unquote(text: str) -> str:
    if text.startswith("`"):
        return text[1:-1]
    return bytes(text[1:-1], "utf-8").decode("unicode_escape")


def _matching(toks: list[Tok], i: int, open_: str = "{", close: str = "}") -> int:
    pairs = {"{": "}", "(": ")", "[": "]"}
    open_ = toks[i].text
    close = pairs[open_]
    depth = 0
    for j in range(i, len(toks)):
        if toks[j].text == open_:
            depth += 1
        elif toks[j].text == close:
            depth -= 1
            if depth == 0:
                return j
    raise ValueError("unbalanced")


def _next_comma(toks: list[Tok], j: int, end: int) -> int:
    depth = 0
    while j < end:
        text = toks[j].text
        if text in "{([":
            depth += 1
        elif text in "})]":
            depth -= 1
        elif text == "," and depth == 0:
            return j
        j += 1
    return end


def _assignments(toks: list[Tok]) -> list[tuple[int, str, int]]:
    """(token index, variable, index of the value) for each `x := v` / `x = v`."""
    out = []
    for i in range(1, len(toks) - 1):
        if toks[i].text in (":=", "=") and toks[i - 1].kind == "ident":
            out.append((i - 1, toks[i - 1].text, i + 1))
    return out


def parse_file(source: str, known: dict[str, str]) -> list[GoTest]:
    toks = tokenize(source)
    tests: list[GoTest] = []
    declared: dict[str, GoTest] = {}  # Go variable -> the test it holds
    borrowed: list[tuple[GoTest, str]] = []
    parser = Parser(toks, {}, known)
    for i, t in enumerate(toks):
        if t.text.endswith("ConformanceTest") and i + 1 < len(toks) and toks[i + 1].text == "{":
            if "." not in t.text:
                continue
            head, end = parser.composite(i + 1)
            if not isinstance(head, dict) or "ShortName" not in head:
                continue
            test = GoTest(
                name=head["ShortName"],
                description=head.get("Description", ""),
                features=[v.name.rsplit(".", 1)[-1] for v in head.get("Features", [])],
                manifests=[m for m in head.get("Manifests", []) if isinstance(m, str)],
            )
            body_start = next(
                (k for k in range(i, end) if toks[k].text == "Test" and toks[k + 1].text == ":"),
                end,
            )
            test.cases = _cases(toks, body_start, end, known, test.weights, test.status)
            # Requests sent by code of its own (no case literal read; the file's helpers too)
            # cannot be replayed; a test of status only can.
            # Asking for the Gateway's address (...MustBeAccepted) means requests follow.
            sends = any(
                k in t.text for t in toks for k in ("MakeRequest", "RoundTrip", "MustBeAccepted")
            )
            test.custom = _uses_own_checks(toks, body_start, end) or (
                not test.cases and (sends or not test.status)
            )
            if test.cases:
                # Status assertions are read for the status-only tests: the longer tests reuse
                # names across scopes (Go's shadowing), which this reader does not follow.
                test.status = []
            tests.append(test)
            declared[toks[i - 2].text if toks[i - 1].text == "=" else ""] = test
            body = head.get("Test")
            if isinstance(body, Var) and body.name.endswith(".Test"):
                borrowed.append((test, body.name.removesuffix(".Test")))
    # Test: OtherTest.Test — the same requests against this test's own manifests.
    for test, other in borrowed:
        if other in declared:
            test.cases, test.custom = declared[other].cases, declared[other].custom
            test.weights = declared[other].weights
    return tests


def _uses_own_checks(toks: list[Tok], start: int, end: int) -> bool:
    texts = " ".join(t.text for t in toks[start:end])
    return any(
        k in texts
        for k in (
            "websocket.Dial",
            "grpc.Dial",
        )
    )


def _cases(
    toks: list[Tok],
    start: int,
    end: int,
    known: dict[str, str],
    weights: dict[str, float],
    status: list[StatusCheck],
) -> list[Case]:
    """Each ExpectedResponse literal of a test body, with the Gateway it is sent to."""
    variables: dict[str, Any] = {}
    gateways: dict[str, str] = {}  # gwNN variable -> ns/name
    addresses: dict[str, tuple[str, str | None]] = {}  # gwAddr -> (ns/name, listener)
    ports: dict[str, str] = {}  # address variable -> port joined to it
    cases: list[Case] = []
    tables: list[list[dict[str, Any]]] = []
    objects: dict[str, tuple[str, str, str]] = {}  # variable -> an API object it names
    deleted: list[tuple[str, str, str]] = []
    parser = Parser(toks, variables, known)
    infra = known.get(INFRA_NAMESPACE, "default")
    assigned = {i: (name, v) for i, name, v in _assignments(toks[:end]) if i >= start}
    i = start
    while i < end:
        t = toks[i]
        if i in assigned:
            name, v = assigned[i]
            try:
                value, _ = parser.value(v)
            except (ValueError, IndexError):
                value = None
            if isinstance(value, str) or (isinstance(value, dict) and "Type" in value):
                variables[name] = value  # a string, or a condition a helper is given later
            elif name == "expectedWeights" and isinstance(value, dict):
                weights.update({k: v for k, v in value.items() if isinstance(v, (int, float))})
            elif isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
                tables.append(value)  # rows of an anonymous struct a loop fills cases from
            if isinstance(value, dict) and isinstance(value.get("ObjectMeta"), dict):
                meta = value["ObjectMeta"]  # v1.ReferenceGrant{ObjectMeta: ...}: an object
                kind = toks[v].text.rsplit(".", 1)[-1]
                objects[name] = (kind, str(meta.get("Namespace", "")), str(meta.get("Name", "")))
            elif isinstance(value, dict) and "Name" in value:
                ns = value.get("Namespace")
                gateways[name] = f"{ns if isinstance(ns, str) else infra}/{value['Name']}"
            elif isinstance(value, Var) and value.name.startswith("port:"):
                ports[name] = value.name[5:]
            # gwAddr := kubernetes.GatewayAndHTTPRoutesMustBeAccepted(..., NewGatewayRef(gwNN), ...)
            if toks[v].text.endswith("MustBeAccepted") or toks[v].text.endswith("GatewayAddress"):
                call_end = _matching(toks, v + 1)
                for k in range(v, call_end):
                    if toks[k].text.endswith("NewGatewayRef") and toks[k + 2].text in gateways:
                        listener = toks[k + 4] if toks[k + 3].text == "," else None
                        addresses[name] = (
                            gateways[toks[k + 2].text],
                            _unquote(listener.text)
                            if listener and listener.kind == "string"
                            else None,
                        )
            elif toks[v].text.endswith("JoinHostPort") and toks[v + 2].text in addresses:
                addresses[name] = addresses[toks[v + 2].text]
        if t.text.startswith("kubernetes.") and toks[i + 1].text == "(":
            status += _status_check(t.text.split(".", 1)[1], toks, i + 1, parser, gateways)
        if t.text.endswith(".Delete") and toks[i + 1].text == "(":
            # suite.Client.Delete(ctx, &obj): later cases see the fleet without it.
            for k in range(i + 2, _matching(toks, i + 1)):
                if toks[k].text in objects:
                    deleted.append(objects[toks[k].text])
        if t.text == "ExpectedResponse" or t.text.endswith(".ExpectedResponse"):
            j = i + 1
            if toks[j].text == "{":
                literal, after = parser.composite(j)
                found = [literal] if isinstance(literal, dict) else []
            else:
                i += 1
                continue
            if toks[i - 1].text == "]":  # []http.ExpectedResponse{...}: a list of cases
                found = literal if isinstance(literal, list) else [literal]
            rows: list[dict[str, Any]] = [{}]
            if (
                toks[i - 1].text != "]"
                and isinstance(literal, dict)
                and _fields(literal)
                and tables
            ):
                rows = tables[-1]
            gateway, section, port, tls, sni = _destination(toks, i, after, end, addresses, ports)
            for row in rows:
                for c in found:
                    if isinstance(c, dict):
                        named = _fill(sni, row) if row else sni
                        filled = _fill(c, row)
                        cases.append(
                            Case(
                                filled,
                                gateway,
                                section,
                                port,
                                tls,
                                _str_or_none(named),
                                tuple(deleted),
                            )
                        )
            i = after
            continue
        i += 1
    # A case given to an address chosen at run time (a loop over cases): the test's first.
    first = next(iter(addresses.values()), (None, None))
    for case in cases:
        if case.gateway is None:
            case.gateway, case.section = first
    return cases


def _status_check(
    helper: str, toks: list[Tok], open_: int, parser: Parser, names: dict[str, str]
) -> list[StatusCheck]:
    """The status assertion a `kubernetes.X(...)` helper call makes, if it is one read here."""
    close = _matching(toks, open_)
    # Arguments by position (t, client, timeouts, then the names): a name the reader cannot
    # tell (a loop variable over a list) leaves the assertion out rather than misplaced.
    commas = [
        k for k in range(open_ + 1, close) if toks[k].text == "," and _depth(toks, open_, k) == 1
    ]
    starts = [open_ + 1, *(k + 1 for k in commas)]
    args = [toks[k].text if k < close else "" for k in starts]
    first = names.get(args[3]) if len(args) > 3 else None
    second = names.get(args[4]) if len(args) > 4 else None
    if first is None:
        return []
    route, gateway = first, second
    routed = ("HTTPRouteMustHaveCondition", "HTTPRouteMustHaveResolvedRefsConditionsTrue")
    if helper in routed and gateway is None:
        return []
    if helper == "HTTPRouteMustHaveCondition":
        literal = next((k for k in range(open_, close) if toks[k].text == "{"), None)
        given = [parser.variables[t.text] for t in toks[open_:close] if t.text in parser.variables]
        if literal is not None:
            condition, _ = parser.composite(literal)
        else:
            condition = next((v for v in given if isinstance(v, dict)), None)
        if not isinstance(condition, dict):
            return []
        wanted = tuple(
            v if isinstance(v, str) else ""
            for v in (condition.get(k) for k in ("Type", "Status", "Reason"))
        )
        return [StatusCheck("condition", route, gateway, (wanted[0], wanted[1], wanted[2]))]
    if helper == "HTTPRouteMustHaveResolvedRefsConditionsTrue":
        return [StatusCheck("condition", route, gateway, ("ResolvedRefs", "True", "ResolvedRefs"))]
    if helper == "HTTPRouteMustHaveNoAcceptedParents":
        return [StatusCheck("accepted", route, None, want=False)]
    if helper == "GatewayMustHaveZeroRoutes":
        return [StatusCheck("routes", None, route, want=0)]  # its one name is the Gateway's
    return []


def _fields(value: Any) -> set[str]:
    """The `row.field` references in a literal (a case filled from a table row)."""
    if isinstance(value, Var) and "." in value.name and value.name[:1].islower():
        return {value.name.split(".", 1)[1]}
    if isinstance(value, dict):
        return set().union(*map(_fields, value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*map(_fields, value)) if value else set()
    return set()


def _fill(value: Any, row: dict[str, Any]) -> Any:
    """The literal with each `row.field` replaced by the row's value (Go's zero value: "")."""
    if isinstance(value, Var) and "." in value.name and value.name[:1].islower():
        return row.get(value.name.split(".", 1)[1], "")
    if isinstance(value, dict):
        return {k: _fill(v, row) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, row) for v in value]
    return value


def _destination(
    toks: list[Tok],
    literal: int,
    start: int,
    end: int,
    addresses: dict[str, tuple[str, str | None]],
    ports: dict[str, str],
) -> tuple[str | None, str | None, str | None, bool, Any]:
    """The Gateway (and listener) of the request helper a case is given to: the call around
    the literal, else the next call after it; for the TLS helper, the server name it gets
    (its second-to-last argument)."""
    calls = [
        k for k in range(end) if "MakeRequest" in toks[k].text or "MakeTLSRequest" in toks[k].text
    ]
    around = [k for k in calls if k < literal and _matching(toks, k + 1) > literal]
    after = [k for k in calls if k >= start]
    for k in around[-1:] or after[:1]:
        tls = "TLS" in toks[k].text
        close = _matching(toks, k + 1)
        sni: Any = None
        if tls:
            commas = [
                a
                for a in range(k + 2, close)
                if toks[a].text == "," and _depth(toks, k + 1, a) == 1
            ]
            if len(commas) >= 2 and commas[-1] == commas[-2] + 2:
                arg = toks[commas[-2] + 1]
                sni = _unquote(arg.text) if arg.kind == "string" else Var(arg.text)
        for a in range(k + 1, close):
            name = toks[a].text
            if name in addresses:
                gateway, section = addresses[name]
                return gateway, section, ports.get(name), tls, sni
        return None, None, None, tls, sni
    return None, None, None, False, None


def _depth(toks: list[Tok], start: int, at: int) -> int:
    depth = 0
    for k in range(start, at):
        if toks[k].text in "({[":
            depth += 1
        elif toks[k].text in ")}]":
            depth -= 1
    return depth


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
