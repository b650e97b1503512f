"""The offline, deterministic sample provider."""
