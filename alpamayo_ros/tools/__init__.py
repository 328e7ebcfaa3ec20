"""Command-line tools: demo, synthetic data."""
