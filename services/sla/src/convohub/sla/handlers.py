"""Event handlers of the sla service: event in, domain call, unit of work."""
