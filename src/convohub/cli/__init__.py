"""The convohub command line."""
