"""Read models for the pages, the API and the CLI: plain data from the catalog and the lake, never
Markdown."""
