"""Launch the flash_rt_ros policy node with config/groot_cpu.yaml (GR00T N1.7, cpu).

    ros2 launch flash_rt_ros groot_cpu.launch.py checkpoint:=/path/to/groot_ckpt \
        camera_topics:="['/front/image_raw', '/wrist/image_raw']" namespace:=robot1
"""
from flash_rt_ros.launch_description import policy_launch


def generate_launch_description():
    return policy_launch("groot_cpu.yaml")
