"""flash_rt_ros: the ROS 2 policy node package."""
