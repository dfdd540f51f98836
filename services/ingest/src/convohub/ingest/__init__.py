"""ConvoHub ingest service: the HTTP edge: channel webhooks in, agent API in, outbound delivery
back to channels, channel adapter SDK.

Filled in by the service's own issue; for now it only claims its place in the workspace.
"""
