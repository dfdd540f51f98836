"""Adapters of the crm service: repositories, broker and HTTP clients, provider formats."""
