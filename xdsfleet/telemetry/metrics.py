"""Prometheus metrics, one definition each, shared by every layer that counts something.

Names follow Prometheus conventions (`_total` counters, base units); labels stay low in
cardinality: type short names and protocol variants, never node ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

STREAMS = Gauge("xdsfleet_streams", "ADS streams connected now.", ["protocol"])
RESPONSES = Counter("xdsfleet_responses_total", "Discovery responses sent.", ["type"])
RESOURCES_SENT = Counter("xdsfleet_resources_sent_total", "Resources sent in responses.", ["type"])
ACKS = Counter("xdsfleet_acks_total", "Responses clients accepted.", ["type"])
NACKS = Counter("xdsfleet_nacks_total", "Responses clients rejected (NACK).", ["type"])
SEND_TIMEOUTS = Counter(
    "xdsfleet_send_timeouts_total", "Streams closed because a client stopped reading."
)
STREAMS_REFUSED = Counter(
    "xdsfleet_streams_refused_total",
    "Streams ended with an error status because of what the client sent or what we could not "
    "serve it, by reason (invalid_node, no_snapshot, no_first_request, malformed_request, "
    "too_many_names, too_many_unknown_names; permission_denied: a profile its client "
    "certificate may not claim; permission_revoked: an open stream closed when the identity "
    "rules stopped allowing its profile).",
    ["reason"],
)
STREAMS_MISCONFIGURED = Counter(
    "xdsfleet_streams_misconfigured_total",
    "Streams opened by a node whose metadata names something the fleet lacks (a gateway): "
    "they are served, but an empty configuration.",
)
UNSUPPORTED_REQUESTS = Counter(
    "xdsfleet_unsupported_requests_total",
    "Requests for a type URL this server does not serve (answered with nothing).",
)
GENERATIONS = Counter("xdsfleet_generations_total", "Fleet states translated.")
TRANSLATE_SECONDS = Histogram(
    "xdsfleet_translate_seconds",
    "Time to translate and encode one fleet state for every watched profile.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PROFILES = Gauge("xdsfleet_profiles", "Node profiles with at least one stream.")
SOURCE_REJECTIONS = Counter(
    "xdsfleet_source_rejections_total",
    "Times an input file was found invalid or inconsistent (its last good version serves).",
    ["source"],
)
SOURCE_PROBLEMS = Gauge(
    "xdsfleet_source_problems",
    "Problems in the inputs now (their last good version serves).",
    ["source"],
)
UNRESOLVED_REFERENCES = Gauge(
    "xdsfleet_unresolved_references",
    "References in the served fleet to nothing (translation skips them; `validate` lists them), "
    "by where the referring object comes from: files or kubernetes.",
    ["source"],
)
UNDRAIN_RAMPS = Gauge(
    "xdsfleet_undrain_ramps",
    "Members whose share of a service port is ramping back up after a drain.",
)
SNAPSHOT_REJECTIONS = Counter(
    "xdsfleet_snapshot_rejections_total",
    "Translated snapshots refused as inconsistent (the previous one keeps serving).",
)
# Kubernetes sources. `resource` is an API plural (services, endpointslices), `member` a member
# name: both bounded by the fleet's size, never by its traffic.
KUBE_LISTS = Counter(
    "xdsfleet_kube_lists_total",
    "Lists of a Kubernetes resource, by why: initial, gone (410), failure, requested (to "
    "confirm a mass removal).",
    ["resource", "reason"],
)
KUBE_WATCH_RESTARTS = Counter(
    "xdsfleet_kube_watch_restarts_total",
    "Watches resumed from their last resourceVersion, by why: expired (the server-side timeout), "
    "dropped (the connection broke), refused (the server would not open it for now: retried).",
    ["resource", "reason"],
)
KUBE_FAILURES = Counter(
    "xdsfleet_kube_request_failures_total",
    "Lists and watches that could not reach the API server or were refused.",
    ["resource"],
)
MEMBER_STALE = Gauge(
    "xdsfleet_member_stale",
    "1 while a member's API server cannot be reached (its last known endpoints keep serving).",
    ["member"],
)
MASS_REMOVALS = Counter(
    "xdsfleet_mass_removals_total",
    "Updates removing more than half of a service's endpoints in a member, by outcome: held, "
    "confirmed (by a fresh list), expired (applied when the hold ran out).",
    ["outcome"],
)
OBJECT_REJECTIONS = Counter(
    "xdsfleet_kube_object_rejections_total",
    "Kubernetes objects our parser refused (their last good version serves).",
    ["resource"],
)
STATUS_WRITES = Counter(
    "xdsfleet_status_writes_total",
    "Status write-backs, by result: written, conflict (retried), failed.",
    ["resource", "result"],
)
STATUS_LEADER = Gauge(
    "xdsfleet_status_leader", "1 while this replica holds the status Lease and writes status."
)
# Event-loop health: a callback that holds the loop delays every stream's I/O (grpc.aio stops
# reading and writing while the loop is busy; BENCHMARKS.md, finding 2.1).
EVENT_LOOP_LAG = Histogram(
    "xdsfleet_event_loop_lag_seconds",
    "How late the event loop ran a timer due now: the longest any callback held it, sampled.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENT_LOOP_HELD = Counter(
    "xdsfleet_event_loop_held_total",
    "Times the event loop was held past 100 ms (its lag timer that late); each is logged, at "
    "most one line per 10 s, as `event_loop_held` with the loop thread's stack.",
)
PUBLISH_SECONDS = Histogram(
    "xdsfleet_publish_seconds",
    "Wall time from a fleet state handed to the publisher until every watched profile's snapshot "
    "is set; translation runs in slices, so this includes the serving done between them.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
FANOUT_SECONDS = Histogram(
    "xdsfleet_fanout_seconds",
    "After a publish, until every stream woken has taken the new snapshot and ACKed what it "
    "changed, while they keep doing so (streams that stop for a second are not waited for; at "
    "most 10 s): what paces the next publish.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONVERGENCE_SECONDS = Histogram(
    "xdsfleet_convergence_seconds",
    "From the first source event of a published state to the last ACK, by every stream "
    "subscribed, of the versions it changed, per type (sampled every 25 ms).",
    ["type"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
GC_FROZEN = Gauge(
    "xdsfleet_gc_frozen_objects",
    "Objects moved out of the collector's passes (gc.freeze at quiet moments), counted after "
    "each full pass: a frozen object is freed when its last reference goes, but a reference "
    "cycle that dies frozen waits for the next full pass, so growth from pass to pass, each "
    "collecting much, is a leak.",
)
GC_PAUSE = Histogram(
    "xdsfleet_gc_pause_seconds",
    "Duration of each garbage collector pass, by generation (2: a full pass, run only at quiet "
    "moments); the loop is held meanwhile.",
    ["generation"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1),
)
GC_COLLECTED = Counter(
    "xdsfleet_gc_collected_total",
    "Unreachable objects the garbage collector freed, by generation of the pass.",
    ["generation"],
)
# Failures that stop loudly (pipeline/supervisor.py, pipeline/publishing.py).
TASK_FAILURES = Counter(
    "xdsfleet_task_failures_total",
    "Long-lived tasks of `serve` that died (the process then exits non-zero).",
    ["task"],
)
PUBLISH_FAILURES = Counter(
    "xdsfleet_publish_failures_total",
    "Publishes that raised (the last good snapshots keep serving; the state is retried).",
)
WRITE_BUDGET_BYTES = Gauge(
    "xdsfleet_write_budget_bytes",
    "Response bytes being written now, counted against the global write budget.",
)
WRITE_BUDGET_WAITING = Gauge(
    "xdsfleet_write_budget_waiting",
    "Stream writers waiting for the global write budget before they join a response.",
)
PACER_DEFERRED = Counter(
    "xdsfleet_pacer_deferred_steps_total",
    "Stream steps (a request read, a response written) that waited for a later turn of the "
    "event loop: the price of bounding each turn's work, rising with fan-outs.",
)
STREAMS_WAITING = Gauge(
    "xdsfleet_streams_waiting_admission",
    "New ADS streams waiting for their turn (new streams are admitted at a bounded rate).",
)
