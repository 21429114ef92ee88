"""pip install of the flash_rt engine and the flash_rt_ros node package.

The CUDA kernel module (csrc/) is built by CMake when nvcc is present; a CPU-only
install (no nvcc) still works and uses the ``cpu`` reference frontend.
"""
from glob import glob

from setuptools import find_packages, setup

setup(
    name="flash_rt_ros",
    version="0.1.0",
    description="Fast, faithful Vision-Language-Action policy inference (Pi0.5, Pi0) for ROS 2",
    packages=find_packages(include=["flash_rt", "flash_rt.*", "flash_rt_ros", "flash_rt_ros.*"]),
    package_data={"flash_rt": ["configs/*.yaml"]},
    # ROS 2 (ament_python) layout: package index marker, manifest, launch + params files.
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/flash_rt_ros"]),
        ("share/flash_rt_ros", ["package.xml"]),
        ("share/flash_rt_ros/launch", sorted(glob("launch/*.launch.py"))),
        ("share/flash_rt_ros/config", sorted(glob("config/*.yaml"))),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "torch>=2.4",
        "safetensors>=0.4",
        "sentencepiece>=0.1.99",
        "pyyaml>=6",
        "opencv-python-headless>=4.8",
    ],
    extras_require={"test": ["pytest>=7"]},
    entry_points={"console_scripts": [
        "flash-rt-make-checkpoint = flash_rt.tools.make_checkpoint:main",
        "flash_rt_policy_node = flash_rt_ros.policy_node:main",
        "flash_rt_synthetic_publisher = flash_rt_ros.synthetic:main",
        "flash-rt-ros-demo = flash_rt_ros.demo:main",
    ]},
)
