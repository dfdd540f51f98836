"""Adapters of the ingest service: repositories, broker and HTTP clients, provider formats."""
