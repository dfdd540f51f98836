"""Event handlers of the crm service: event in, domain call, unit of work."""
