"""The Massive (Polygon) REST provider."""
