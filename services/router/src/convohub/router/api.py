"""HTTP routes of the router service."""
