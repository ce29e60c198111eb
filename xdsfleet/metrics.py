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
SNAPSHOT_REJECTIONS = Counter(
    "xdsfleet_snapshot_rejections_total",
    "Translated snapshots refused as inconsistent (the previous one keeps serving).",
)
