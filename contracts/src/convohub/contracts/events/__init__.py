"""The v1 event catalogue, one module per area. Importing this package registers every event."""

from convohub.contracts.events import (  # noqa: F401  (imported to register the events)
    agent,
    conversation,
    customer,
    deadletter,
    feedback,
    routing,
    sla,
)
