"""Buffers, input selection and the inference runner between the node and the model (numpy/torch, no ROS)."""
