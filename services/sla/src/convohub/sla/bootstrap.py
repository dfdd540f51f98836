"""Wires the sla service's domain, handlers, adapters and routes together."""
