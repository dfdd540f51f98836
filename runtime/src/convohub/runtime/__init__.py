"""ConvoHub runtime: what every service shares and nothing domain-specific.

Settings, the event bus, the projection store, the outbox, telemetry, health and dead
letters arrive with the Foundation II issue.
"""
