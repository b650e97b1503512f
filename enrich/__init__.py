"""enrich: a local market-data enrichment desk (lake of Parquet + DuckDB catalog)."""

__version__ = "0.1.0"
