"""Launch the flash_rt_ros policy node with config/pi0_cpu.yaml (Pi0, cpu).

    ros2 launch flash_rt_ros pi0_cpu.launch.py checkpoint:=/path/to/ckpt \
        camera_topics:="['/front/image_raw', '/wrist/image_raw']" namespace:=robot1
"""
from flash_rt_ros.launch_description import policy_launch


def generate_launch_description():
    return policy_launch("pi0_cpu.yaml")
