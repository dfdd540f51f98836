"""Adapters of the router service: repositories, broker and HTTP clients, provider formats."""
