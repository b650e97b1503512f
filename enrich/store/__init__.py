"""Where data lives: the Parquet lake, the DuckDB catalog (and its migrations), the store that opens
both, quarantine, the universe and the plan limits the catalog remembers."""
