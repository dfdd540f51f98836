"""Event handlers of the feedback service: event in, domain call, unit of work."""
