"""Wires the crm service's domain, handlers, adapters and routes together."""
