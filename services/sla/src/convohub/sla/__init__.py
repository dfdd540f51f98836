"""ConvoHub sla service: SLA policies, business hours, durable timers, warnings, breaches,
escalations.

Filled in by the service's own issue; for now it only claims its place in the workspace.
"""
