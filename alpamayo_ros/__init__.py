"""alpamayo_ros: NVIDIA Alpamayo 1 (AlpamayoR1) as a ROS 2 driving node."""
