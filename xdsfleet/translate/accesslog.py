"""The access log of a gateway listener: one JSON object per request on Envoy's stdout by
default (what a log pipeline parses without a grammar), Envoy's text line, or none, as the
listener's TrafficPolicy `accessLog.format` says (docs/policy.md).

Pure: it builds the `access_log` entries a connection manager carries, nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import substitution_format_string_pb2 as format_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from google.protobuf import struct_pb2

from xdsfleet.model.policy import AccessLog, AccessLogFormat
from xdsfleet.translate.proto import Message, pack_into

STDOUT = "envoy.access_loggers.stdout"

# The fields of a JSON line: Envoy's command operators, named as Envoy Gateway and Istio name
# theirs, so dashboards made for them read ours.
JSON_FIELDS = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "authority": "%REQ(:AUTHORITY)%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration": "%DURATION%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_host": "%UPSTREAM_HOST%",
    "route_name": "%ROUTE_NAME%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
}


def port_format(settings: Iterable[AccessLog | None]) -> AccessLogFormat:
    """The format of one Envoy listener, from the `accessLog` policies of the Gateway
    listeners on its port, in their order: the first one set decides; JSON by default."""
    return next((s.format for s in settings if s is not None), AccessLogFormat.JSON)


def access_logs(log_format: AccessLogFormat) -> list[Message]:
    """The `access_log` entries of a gateway listener's connection manager."""
    if log_format is AccessLogFormat.OFF:
        return []
    stdout = stream_pb2.StdoutAccessLog()
    if log_format is AccessLogFormat.JSON:
        fields = struct_pb2.Struct()
        fields.update(JSON_FIELDS)
        stdout.log_format.CopyFrom(format_pb2.SubstitutionFormatString(json_format=fields))
    entry = accesslog_pb2.AccessLog(name=STDOUT)
    pack_into(entry.typed_config, stdout)
    return [entry]
