"""Status write-back to one object of the fleet cluster: its status subresource, 409s retried.

The caller says how to turn the object as it is into the status it should have; this module
reads the object, writes that status from the resourceVersion it read, and, when another writer
came first (409 Conflict), reads and merges again, a few times. Nothing is written when the
merge changes nothing, so a fleet at rest costs no writes.

It must not decide what the status says. Its calls block: run them in a thread.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

import structlog

from xdsfleet.documents.reading import JsonObject
from xdsfleet.sources.kube.client import ApiError, Cluster, Conflict, NotFound
from xdsfleet.sources.kube.resources import ApiResource
from xdsfleet.telemetry import metrics

log = structlog.get_logger(__name__)

ATTEMPTS = 5


class Written(StrEnum):
    WRITTEN = "written"
    UNCHANGED = "unchanged"
    GONE = "gone"  # the object was deleted meanwhile
    FAILED = "failed"  # conflicts every time, or the API server refused or did not answer


def write_status(
    cluster: Cluster,
    resource: ApiResource,
    *,
    namespace: str,
    name: str,
    merge: Callable[[JsonObject], JsonObject | None],
) -> Written:
    """`merge` gets the object as it is and returns its new `status`, or None to leave it."""
    for _ in range(ATTEMPTS):
        try:
            obj = cluster.get(resource, namespace=namespace, name=name)
            try:
                status = merge(obj)
            except (KeyError, TypeError, AttributeError, ValueError) as error:
                # An object of a shape its CRD should not allow: leave it, keep serving.
                log.warning("status_merge_failed", object=f"{namespace}/{name}", error=repr(error))
                metrics.STATUS_WRITES.labels(resource.plural, "failed").inc()
                return Written.FAILED
            if status is None:
                return Written.UNCHANGED
            obj["status"] = status
            cluster.replace(resource, obj, subresource="status")
        except Conflict:
            metrics.STATUS_WRITES.labels(resource.plural, "conflict").inc()
            continue  # someone wrote it since we read it: read it again
        except NotFound:
            return Written.GONE
        except ApiError as error:
            log.warning("status_write_failed", object=f"{namespace}/{name}", error=str(error))
            metrics.STATUS_WRITES.labels(resource.plural, "failed").inc()
            return Written.FAILED
        metrics.STATUS_WRITES.labels(resource.plural, "written").inc()
        return Written.WRITTEN
    log.warning("status_write_conflicts", object=f"{namespace}/{name}", attempts=ATTEMPTS)
    metrics.STATUS_WRITES.labels(resource.plural, "failed").inc()
    return Written.FAILED
