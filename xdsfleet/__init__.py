"""xdsfleet: an Envoy xDS control plane that serves many Kubernetes clusters as one pool."""

import os

# The process's stderr is a JSON log stream (telemetry/logs.py), and gRPC's C core writes plain
# text lines into it (read when grpc is first imported, so it is set here, before any module of
# ours imports grpc). Its failures reach us as exceptions and are logged as events; to see the
# core's own lines while debugging, run with GRPC_VERBOSITY=ERROR (or DEBUG).
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

__version__ = "0.1.0"
