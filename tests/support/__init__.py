"""Test support every package's tests may import (`from tests.support.hub import ...`)."""
