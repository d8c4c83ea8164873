"""The deploy/ stack's configuration files."""
