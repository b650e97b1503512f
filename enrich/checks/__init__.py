"""What a fetched frame must pass before and after it is stored: row validation, restatements,
quality checks."""
