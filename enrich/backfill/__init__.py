"""History on request: backfill plans cut into one-request chunks, their runner, the jobs the pages
and CLI start, and the coverage heatmap whose gaps they fill."""
