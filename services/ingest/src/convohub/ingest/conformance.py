"""The channel adapter conformance kit (placeholder while it is written)."""
