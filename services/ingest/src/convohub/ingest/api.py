"""HTTP routes of the ingest service."""
