"""Launch the flash_rt_ros policy node with config/pi0_rtx.yaml (Pi0, rtx).

    ros2 launch flash_rt_ros pi0_rtx.launch.py checkpoint:=/path/to/ckpt \
        camera_topics:="['/front/image_raw', '/wrist/image_raw']" namespace:=robot1

Needs a flash_rt frontend registered for hardware "rtx_sm120" (the GPU fast paths land
separately from the cpu reference). Without one the node exits at start-up with status 1
and one line naming the registered (model, framework, hardware) combinations.
"""
from flash_rt_ros.launch_description import policy_launch


def generate_launch_description():
    return policy_launch("pi0_rtx.yaml")
