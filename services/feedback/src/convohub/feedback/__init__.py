"""ConvoHub feedback service: CSAT/NPS surveys, sentiment, service metrics, closed-loop follow-up,
BI facts.

Filled in by the service's own issue; for now it only claims its place in the workspace.
"""
