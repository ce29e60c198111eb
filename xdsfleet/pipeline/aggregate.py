"""One `FleetState` from every source: the Fleet (a file, or a resource of the fleet cluster),
the member watchers and the fleet cluster's objects.

It decides which Kubernetes members run: the Fleet's members whose source is a kubeconfig or a
Secret, and the labelled member Secrets no Fleet member claims. It starts and stops their
watchers as those change, without a restart. A member whose watcher is replaced (a rotated
kubeconfig, a new context) keeps its last state until the new watcher has settled, and a member
that cannot be reached at all is present, empty and stale: never silently gone. Fleet-level
objects of the Fleet file and of the fleet cluster are merged; an object defined in both is a
conflict that the file wins. Ingresses become HTTPRoutes here, where every Gateway is known; an
HTTPRoute of the same name wins over one made from an Ingress.

It must not watch anything itself (`sources.kube` does), nor translate. Runs on the loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from xdsfleet.documents import ingress
from xdsfleet.documents.manifests import FleetSpec
from xdsfleet.model.fleet import FleetState, Member, MemberState
from xdsfleet.sources.kube.client import Access, AccessError, Cluster
from xdsfleet.sources.kube.decoding import Decoder
from xdsfleet.sources.kube.fleetcluster import FleetCluster, FleetObjects
from xdsfleet.sources.kube.members import MemberWatcher
from xdsfleet.sources.kube.settings import KubeSettings
from xdsfleet.status.reports import MemberReport

log = structlog.get_logger(__name__)

T = TypeVar("T")
_BOTH = "defined in the Fleet's files and in the fleet cluster; the file's is used"


def cluster_access(spec: FleetSpec | None) -> Access | None:
    """The fleet cluster a Fleet file names in `spec.source.kubeconfig`, if any."""
    if spec is None or spec.kubeconfig is None:
        return None
    return Access(kubeconfig=spec.kubeconfig, context=spec.context)


def _is_kube(member: Member) -> bool:
    return member.kubeconfig is not None or member.secret is not None


@dataclass(frozen=True, slots=True)
class _Wanted:
    """A Kubernetes member to watch, and how to reach it (None: it cannot be, see `problem`)."""

    member: Member
    access: Access | None
    problem: str = ""


class Aggregator:
    """Feed it the Fleet (`set_base` from files, or `use_fleet_resource`); it calls `on_state`
    with each new fleet state once `wait_ready` has returned the first."""

    def __init__(
        self,
        *,
        on_state: Callable[[FleetState], None],
        on_crash: Callable[[BaseException], None],
        settings: KubeSettings,
        namespace: str,
    ) -> None:
        self._on_state = on_state
        self._on_crash = on_crash
        self._settings = settings
        self._namespace = namespace
        self.state: FleetState | None = None
        self._base: FleetState | None = None
        self._based = asyncio.Event()
        self._emitting = False
        self.fleet_resource: str | None = None  # the Fleet's name, when it is a resource
        self.fleet_cluster: FleetCluster | None = None
        self._objects = FleetObjects()
        self._wanted: dict[str, _Wanted] = {}
        self._watchers: dict[str, MemberWatcher] = {}
        self._last: dict[str, MemberState] = {}  # per member: the last state any watcher gave
        # Per member: (the state it was made from, (member, stale), the state made).
        self._composed: dict[str, tuple[MemberState, tuple[Member, bool], MemberState]] = {}
        self._reported: set[str] = set()
        self._stale_since: dict[str, float] = {}  # per member: when it was first seen stale
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False  # once stopped, no watcher starts any more
        # Every member's big lists are decoded and parsed in worker processes (it starts them
        # only when there is much to decode: `sources.kube.decoding`).
        self._decoder = Decoder()

    # --- Inputs ---

    def set_base(self, state: FleetState, *, fleet_cluster: Access | None) -> None:
        """The Fleet file's state (its Kubernetes members still empty), and the fleet cluster it
        names in `spec.source.kubeconfig`."""
        if fleet_cluster != (self.fleet_cluster.cluster.access if self.fleet_cluster else None):
            self._replace_fleet_cluster(fleet_cluster, fleet_name=None)
        self._base = state
        self._based.set()
        self._changed()

    def use_fleet_resource(self, name: str, access: Access) -> None:
        """The Fleet is the custom resource `name` of the cluster `access` reaches."""
        self.fleet_resource = name
        self._replace_fleet_cluster(access, fleet_name=name)

    def _replace_fleet_cluster(self, access: Access | None, *, fleet_name: str | None) -> None:
        if self._closed:
            return
        if self.fleet_cluster is not None:
            self._stop_later("fleet-cluster", self.fleet_cluster.stop())
            self.fleet_cluster = None
        if access is None:
            self._objects = FleetObjects()
            return
        try:
            cluster = Cluster(access, self._settings)
        except AccessError as error:
            log.error("fleet_cluster_access_invalid", error=str(error))
            return
        # Until the new one has listed, the objects last seen keep serving.
        self.fleet_cluster = FleetCluster(
            cluster=cluster,
            namespace=self._namespace,
            fleet_name=fleet_name,
            on_change=self._on_objects,
            on_crash=self._on_crash,
            settings=self._settings,
        )
        self.fleet_cluster.start()

    def _on_objects(self, objects: FleetObjects) -> None:
        if self._closed or self.fleet_cluster is None or self.fleet_cluster.objects is not objects:
            return  # from a fleet cluster watch that is being replaced or stopped
        self._objects = objects
        if self.fleet_resource is not None:
            if objects.fleet is None:
                self._report("fleet", f"no Fleet {self.fleet_resource!r} in the fleet cluster")
            else:
                self._base = self._state_of(objects.fleet)
                self._based.set()
        self._changed()

    def _state_of(self, spec: FleetSpec) -> FleetState:
        for member in spec.members:
            if member.manifests is not None:
                self._report(
                    member.name, "a Fleet resource cannot name a manifests directory; skipped"
                )
        members = [MemberState(m) for m in spec.members if m.manifests is None]
        return FleetState(
            name=spec.name,
            members=tuple(sorted(members, key=lambda m: m.member.name)),
            export_all=spec.export_all,
            ip_family=spec.ip_family,
            identities=spec.identities,
        )

    def _on_member(self, name: str, state: MemberState) -> None:
        watcher = self._watchers.get(name)
        if self._closed or watcher is None or watcher.state is not state:
            return  # from a watcher that is being replaced or stopped
        self._last[name] = state
        self._changed()

    # --- Members ---

    def _wanted_members(self, base: FleetState) -> dict[str, _Wanted]:
        secrets = {s.name: s for s in self._objects.secrets}
        names = {m.member.name for m in base.members}
        wanted = {}
        for member in (m.member for m in base.members if _is_kube(m.member)):
            if member.kubeconfig is not None:
                access = Access(kubeconfig=member.kubeconfig, context=member.context)
                wanted[member.name] = _Wanted(member, access)
            elif (secret := secrets.get(member.secret or "")) is not None:
                wanted[member.name] = _Wanted(member, Access(kubeconfig_text=secret.kubeconfig))
            else:
                problem = (
                    f"no Secret {member.secret!r} labelled {'xdsfleet.io/member'!r} in "
                    f"namespace {self._namespace!r} of the fleet cluster"
                )
                wanted[member.name] = _Wanted(member, None, problem)
        claimed = {m.member.secret for m in base.members}
        for secret in self._objects.secrets:
            if secret.name in claimed:
                continue
            if secret.member is None:
                self._report(f"secret {secret.name}", "; ".join(map(str, secret.problems)))
            elif secret.member.name in names or secret.member.name in wanted:
                self._report(
                    f"secret {secret.name}",
                    f"member {secret.member.name!r} is already defined; this Secret is ignored",
                )
            else:
                access = Access(kubeconfig_text=secret.kubeconfig)
                wanted[secret.member.name] = _Wanted(secret.member, access)
        return wanted

    def _reconcile(self, wanted: dict[str, _Wanted]) -> None:
        for name in self._watchers.keys() - wanted.keys():
            log.info("member_removed", member=name)
            self._stop_later(f"member-{name}", self._watchers.pop(name).stop())
            self._last.pop(name, None)
        for name, want in wanted.items():
            running = self._watchers.get(name)
            if running is not None and (running.access, running.member.endpoint_mode) == (
                want.access,
                want.member.endpoint_mode,
            ):
                continue
            if running is not None:
                self._stop_later(f"member-{name}", self._watchers.pop(name).stop())
            if want.access is not None:
                self._start(want.member, want.access)
            if want.problem:
                self._report(name, want.problem)
        self._wanted = wanted

    def _start(self, member: Member, access: Access) -> None:
        try:
            cluster = Cluster(access, self._settings)
        except AccessError as error:
            self._report(member.name, str(error))
            return
        watcher = MemberWatcher(
            member=member,
            cluster=cluster,
            on_state=lambda state: self._on_member(member.name, state),
            on_crash=self._on_crash,
            settings=self._settings,
            decoder=self._decoder,
        )
        self._watchers[member.name] = watcher
        watcher.start()
        log.info("member_added", member=member.name, access=access.describe())

    def _member_state(self, member: Member) -> MemberState:
        watcher = self._watchers.get(member.name)
        if watcher is not None and watcher.settled.is_set():
            source, stale = watcher.state, watcher.state.stale
        else:
            # Not settled yet, or nobody can watch it: its last known state, else nothing; and
            # stale when nobody is watching it.
            source = self._last.get(member.name) or MemberState(member)
            stale = source.stale or watcher is None
        kept = self._composed.get(member.name)
        if kept is not None and kept[0] is source and kept[1] == (member, stale):
            return kept[2]  # the same object: translation memos hold on identity
        composed = source
        if (source.member, source.stale) != (member, stale):
            composed = dataclasses.replace(source, member=member, stale=stale)
        self._composed[member.name] = (source, (member, stale), composed)
        return composed

    # --- The state ---

    def _changed(self, *, build: bool = False) -> None:
        base = self._base
        if base is None or self._closed:
            return
        wanted = self._wanted_members(base)
        self._reconcile(wanted)
        if not (self._emitting or build):
            # Nothing reads a state before the first complete one, which `wait_ready` builds:
            # one per member listed, at start-up, was 50 fleet states at E = 100,000.
            return
        from_base = {m.member.name for m in base.members}
        members = [self._member_state(m.member) if _is_kube(m.member) else m for m in base.members]
        # Members of their own Secrets.
        members += [self._member_state(w.member) for n, w in wanted.items() if n not in from_base]
        members.sort(key=lambda m: m.member.name)
        now = time.time()
        self._stale_since = {
            m.member.name: self._stale_since.get(m.member.name, now) for m in members if m.stale
        }
        for name in self._composed.keys() - wanted.keys():
            del self._composed[name]
        objects = self._objects
        gateways = self._merge("Gateway", base.gateways, objects.gateways)
        http_routes = self._merge("HTTPRoute", base.http_routes, objects.http_routes)
        state = FleetState(
            name=base.name,
            members=tuple(members),
            gateways=gateways,
            http_routes=self._merge(
                "HTTPRoute",
                http_routes,
                ingress.routes(objects.ingresses, gateways),
                "an HTTPRoute and an Ingress of this name; the HTTPRoute is used",
            ),
            export_all=base.export_all,
            ip_family=base.ip_family,
            grpc_routes=self._merge("GRPCRoute", base.grpc_routes, objects.grpc_routes),
            policies=self._merge("TrafficPolicy", base.policies, objects.policies),
            secrets=self._merge("Secret", base.secrets, objects.tls_secrets),
            reference_grants=self._merge(
                "ReferenceGrant", base.reference_grants, objects.reference_grants
            ),
            namespaces=self._merge("Namespace", base.namespaces, objects.namespaces),
            foreign_gateways=tuple(sorted({*base.foreign_gateways, *objects.foreign_gateways})),
            identities=base.identities,
        )
        if state == self.state:
            return
        self.state = _keeping(self.state, state)
        if self._emitting:
            self._on_state(self.state)

    def _merge(
        self, kind: str, preferred: Sequence[T], other: Iterable[T], conflict: str = _BOTH
    ) -> tuple[T, ...]:
        """Both sets of objects, sorted; `preferred` wins a (namespace, name) both define."""
        by_key: dict[tuple[str, str], T] = {_key(o): o for o in other}
        for obj in preferred:
            key = _key(obj)
            if key in by_key and by_key[key] != obj:
                self._report(f"{kind} {key[0]}/{key[1]}", conflict)
            by_key[key] = obj
        return tuple(by_key[key] for key in sorted(by_key))

    def _report(self, subject: str, problem: str) -> None:
        """Log a problem once (until it is reported again after the next start)."""
        if f"{subject}: {problem}" not in self._reported:
            self._reported.add(f"{subject}: {problem}")
            log.warning("source_problem", subject=subject, problem=problem)

    # --- Life cycle ---

    async def wait_ready(self, *, member_seconds: float) -> FleetState:
        """The first complete state: the Fleet known, the fleet cluster listed once (however
        long that takes: without it there is nothing to serve), and every member settled or
        `member_seconds` passed (an unreachable member must not keep the others from being
        served). From then on, `on_state` hears of every change."""
        await self._based.wait()
        if self.fleet_cluster is not None:
            await self.fleet_cluster.synced.wait()
        waits = [asyncio.ensure_future(w.settled.wait()) for w in self._watchers.values()]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=member_seconds)
            for wait in pending:
                wait.cancel()
            unsettled = sorted(n for n, w in self._watchers.items() if not w.settled.is_set())
            if unsettled:
                log.warning("members_not_settled", members=unsettled, seconds=member_seconds)
        self._changed(build=True)
        self._emitting = True
        assert self.state is not None
        return self.state

    def awaiting(self) -> str | None:
        """What the first complete state still waits for (for `/readyz` during a long start),
        None when nothing: the same conditions `wait_ready` waits on, said in words."""
        if not self._based.is_set():
            if self.fleet_resource is not None:
                return f"waiting for the Fleet resource {self.fleet_resource!r}"
            return "loading the fleet"
        if self.fleet_cluster is not None and not self.fleet_cluster.synced.is_set():
            return "listing the fleet cluster"
        unsettled = sorted(n for n, w in self._watchers.items() if not w.settled.is_set())
        if not unsettled:
            return None
        shown = ", ".join(unsettled[:5]) + (", ..." if len(unsettled) > 5 else "")
        return f"listing members: {len(unsettled)} of {len(self._watchers)} not listed ({shown})"

    def _stop_later(self, what: str, stopping: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(stopping)
        task.set_name(f"stop-{what}")
        self._stopping.add(task)
        task.add_done_callback(self._stopped)

    def _stopped(self, task: asyncio.Task[None]) -> None:
        self._stopping.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("stop_failed", task=task.get_name(), error=repr(task.exception()))

    async def stop(self) -> None:
        self._closed = True
        self._emitting = False
        if self.fleet_cluster is not None:
            self._stop_later("fleet-cluster", self.fleet_cluster.stop())
            self.fleet_cluster = None
        for name in list(self._watchers):
            self._stop_later(f"member-{name}", self._watchers.pop(name).stop())
        await asyncio.gather(*self._stopping, return_exceptions=True)
        await asyncio.to_thread(self._decoder.close)  # waits for its processes

    def reports(self) -> list[MemberReport]:
        """Every Kubernetes member, for `/debug/members`."""
        found = []
        for name, want in sorted(self._wanted.items()):
            watcher = self._watchers.get(name)
            state = self._member_state(want.member)
            endpoints = sum(len(s.endpoints) for s in state.endpoint_slices)
            found.append(
                MemberReport(
                    name=name,
                    source=want.access.describe() if want.access else "unreachable",
                    stale=state.stale,
                    settled=watcher is not None and watcher.settled.is_set(),
                    problem=want.problem,
                    failures=watcher.failures if watcher else {},
                    services=len(state.services),
                    endpoints=endpoints,
                    stale_since=self._stale_since.get(name) if state.stale else None,
                )
            )
        return found


def _key(obj: Any) -> tuple[str, str]:
    return obj.namespace, obj.name


def _keeping(previous: FleetState | None, state: FleetState) -> FleetState:
    """`state`, with each field that did not change taken from `previous`: translation keys
    some of its memos on identity (the policy index on the policies tuple, for one)."""
    if previous is None:
        return state
    unchanged = {
        f.name: getattr(previous, f.name)
        for f in dataclasses.fields(state)
        if getattr(previous, f.name) == getattr(state, f.name)
    }
    return dataclasses.replace(state, **unchanged)
