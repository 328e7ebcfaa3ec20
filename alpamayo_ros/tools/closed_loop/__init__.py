"""Closed loop: the node's tick engine drives a simulated car in the synthetic world (`tools/world.py`)."""
