"""Wires the router service's domain, handlers, adapters and routes together."""
