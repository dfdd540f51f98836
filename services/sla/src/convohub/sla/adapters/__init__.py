"""Adapters of the sla service: repositories, broker and HTTP clients, provider formats."""
