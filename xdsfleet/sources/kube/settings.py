"""Timeouts, backoffs and holds of the Kubernetes sources, in one frozen value.

Production defaults live here; tests pass shorter ones. Nothing reads the environment: `serve`
builds the settings it wants and hands them down.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KubeSettings:
    # A watch asks the server to end it after a random time in [watch_seconds, 2 x watch_seconds]
    # (as client-go does), so that the watches of many replicas do not reconnect in step.
    watch_seconds: int = 300
    # The client gives up on a watch that has said nothing (not even a bookmark) for its
    # server-side timeout plus this margin: without a client-side timeout, a watch over a cut
    # network blocks its thread forever.
    watch_read_margin: float = 30.0
    connect_seconds: float = 5.0
    # Reading a whole list: generous, lists of a big member take time.
    list_seconds: float = 60.0
    # Other requests (a status write, a Lease).
    request_seconds: float = 10.0
    # Failures back off exponentially with full jitter, from this base up to this cap.
    backoff_seconds: float = 0.5
    backoff_cap_seconds: float = 30.0
    # A watch the server will not open (connection refused, 429, 5xx) is retried from the same
    # resourceVersion for this long before the resource is listed again.
    watch_retry_seconds: float = 10.0
    # Lists ask for pages of this many objects, where the server pages (quorum reads).
    list_page_size: int = 500
    # A resource type that does not exist (a CRD not installed) is looked for again this often.
    absent_recheck_seconds: float = 60.0
    # A type that answered a list and then 404 is only taken as gone (its objects dropped) once
    # discovery has not listed it for this long: a restarting API server serves CRDs late.
    absent_confirm_seconds: float = 30.0
    # TCP keepalive: a peer that stopped answering is noticed after about
    # idle + interval x count seconds, even on a quiet watch.
    keepalive_idle: int = 15
    keepalive_interval: int = 5
    keepalive_count: int = 3
    # docs/architecture.md, decision 5: a mass removal is held until a fresh list confirms it, at
    # most this long (longer while the confirming list is under way: up to `list_seconds` more).
    hold_seconds: float = 10.0
    # Lists asked for (to confirm mass removals) start at most this often per resource.
    relist_interval_seconds: float = 2.0
    # A burst of removals (a member's slices deleted one by one: one watch event each) is
    # confirmed by one list, asked for once no removal has come for this long (and at most
    # `relist_interval_seconds` after the first): asked for at the first, the list that
    # confirms the last would wait out the relist interval.
    hold_quiet_seconds: float = 0.1
