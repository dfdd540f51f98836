"""Wires the feedback service's domain, handlers, adapters and routes together."""
