"""Unit constants used across the package, defined once. Stamps are integer nanoseconds (`stamp_ns`)."""

NS_PER_S = 1_000_000_000
