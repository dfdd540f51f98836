"""Event handlers of the ingest service: event in, domain call, unit of work."""
