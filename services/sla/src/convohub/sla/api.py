"""HTTP routes of the sla service."""
