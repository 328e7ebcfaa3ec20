"""AlpamayoR1 in PyTorch + transformers, weight-compatible with the release. No ROS below this package."""
