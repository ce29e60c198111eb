"""xdsfleet: an Envoy xDS control plane that serves many Kubernetes clusters as one pool."""

__version__ = "0.1.0"
