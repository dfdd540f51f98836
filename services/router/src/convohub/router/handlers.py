"""Event handlers of the router service: event in, domain call, unit of work."""
