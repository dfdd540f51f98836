"""ConvoHub router service: queues, skills, priorities, agent presence and capacity, assignment,
transfer, escalation routing.

Filled in by the service's own issue; for now it only claims its place in the workspace.
"""
