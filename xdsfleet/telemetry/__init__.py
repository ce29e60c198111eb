"""Logs (structlog JSON) and Prometheus metrics, for the impure layers only: the pure ones
(model, documents, translate, cache) may not import this (an import-linter contract)."""
