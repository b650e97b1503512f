"""A run: the refresh plan, the engine's fetch and derive steps, its worker processes and the
scheduler that starts runs."""
