"""Adapters of the feedback service: repositories, broker and HTTP clients, provider formats."""
