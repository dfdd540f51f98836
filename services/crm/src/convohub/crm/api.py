"""HTTP routes of the crm service."""
