"""ConvoHub crm service: customer profiles, identity resolution and merge across channels,
segments, unified timeline, erasure.

Filled in by the service's own issue; for now it only claims its place in the workspace.
"""
