"""The maths, apart from I/O: features, implied volatility (BSM, American), OCC symbols, rates,
dividend yields, option-chain snapshots and their summaries."""
