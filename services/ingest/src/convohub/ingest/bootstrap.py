"""Wires the ingest service's domain, handlers, adapters and routes together."""
