"""pip install of the flash_rt engine and the flash_rt_ros node package.

The CUDA kernel module (csrc/) is built by CMake when nvcc is present; a CPU-only
install (no nvcc) still works and uses the ``cpu`` reference frontend.
"""
import os
import shutil
import subprocess
import sys
from glob import glob

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

# ---------------------------------------------------------------- CUDA kernel module
# FLASH_RT_BUILD_KERNELS: "auto" (default: build when nvcc is found AND a GPU is visible or
# FLASH_RT_GPU_ARCH is set; a failed build then only warns), "1" (build, fail loudly),
# "0" (never). FLASH_RT_GPU_ARCH: e.g. "90a" or "90a;110a;120a" (default: visible GPU).
# Build needs: cmake >= 3.24, pybind11, cuBLASLt (CUDA toolkit or the nvidia-cublas
# wheel) and the CUTLASS headers (nvidia-cutlass wheel) importable by this Python, so use
# `pip install --no-build-isolation`.
# nvidia-cutlass: CUTLASS / CuTe headers only (csrc/gemm_geglu_sm90.cu, the megakernel's
# wgmma atoms; pinned, the GeGLU kernel's epilogue uses CUTLASS's internal adapter API).
KERNEL_REQUIREMENTS = ["pybind11>=2.12", "nvidia-cublas>=13,<14", "nvidia-cutlass==4.2.0.0"]
# The rosbag replay tools (python -m flash_rt_ros.bag, flash_rt_bag): pure-Python bag I/O
# and the comparison plot. requirements.txt (scripts/setup.sh) installs them too.
# The node's GPU JPEG decoder (jpeg_decoder: gpu, flash_rt_ros.jpeg): NVIDIA's nvImageCodec
# and, on x86_64, nvJPEG (JetPack ships nvJPEG on Jetson)
GPU_JPEG_REQUIREMENTS = ["nvidia-nvimgcodec-cu13>=0.9",
                         "nvidia-nvjpeg>=13; platform_machine == 'x86_64'"]
BAG_REQUIREMENTS = ["rosbags>=0.11", "matplotlib>=3.7"]
# openpi JAX checkpoints (framework="jax"): Orbax's reader, TensorStore and a CPU jax.
# requirements.txt (scripts/setup.sh) installs them too.
JAX_REQUIREMENTS = ["orbax-checkpoint>=0.11.13", "tensorstore>=0.1.71", "jax>=0.5"]


def _find_nvcc():
    nvcc = shutil.which("nvcc")
    if nvcc is None and os.path.exists("/usr/local/cuda/bin/nvcc"):
        nvcc = "/usr/local/cuda/bin/nvcc"
    return nvcc


def _gpu_visible():
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


class CMakeExtension(Extension):
    def __init__(self, name, sourcedir):
        super().__init__(name, sources=[])
        self.sourcedir = os.path.abspath(sourcedir)


class BuildKernels(build_ext):
    """Runs CMake for csrc/ (or skips it for a CPU-only install)."""

    def run(self):
        mode = os.environ.get("FLASH_RT_BUILD_KERNELS", "auto").strip().lower()
        nvcc = _find_nvcc()
        required = mode in ("1", "on", "true", "yes")
        skip = None
        if mode in ("0", "off", "false", "no"):
            skip = "FLASH_RT_BUILD_KERNELS=0"
        elif nvcc is None:
            skip = "nvcc not found"
        elif not required and not (os.environ.get("FLASH_RT_GPU_ARCH") or _gpu_visible()):
            skip = "no GPU visible and FLASH_RT_GPU_ARCH unset (set FLASH_RT_BUILD_KERNELS=1 to force)"
        if skip and required:
            raise RuntimeError(f"FLASH_RT_BUILD_KERNELS=1 but {skip}")
        if skip:
            print(f"flash_rt: CPU-only install, CUDA kernel module not built ({skip})")
            return
        self._nvcc = nvcc
        try:
            super().run()
        except (subprocess.CalledProcessError, OSError) as exc:
            if required:
                raise
            print(f"flash_rt: WARNING: CUDA kernel build failed ({exc}); CPU-only install. "
                  "Set FLASH_RT_BUILD_KERNELS=1 to make this an error.")

    def build_extension(self, ext):
        if not isinstance(ext, CMakeExtension):
            return super().build_extension(ext)
        out_dir = os.path.abspath(os.path.dirname(self.get_ext_fullpath(ext.name)))
        build_dir = os.path.abspath(os.path.join(self.build_temp, "flash_rt_kernels"))
        cfg = ["cmake", "-S", ext.sourcedir, "-B", build_dir,
               f"-DPython_EXECUTABLE={sys.executable}", f"-DFLASH_RT_OUTPUT_DIR={out_dir}",
               f"-DCMAKE_CUDA_COMPILER={self._nvcc}", "-DCMAKE_BUILD_TYPE=Release"]
        if os.environ.get("FLASH_RT_GPU_ARCH"):
            cfg.append(f"-DGPU_ARCH={os.environ['FLASH_RT_GPU_ARCH']}")
        if shutil.which("ninja"):
            cfg += ["-G", "Ninja"]
        subprocess.check_call(cfg)
        subprocess.check_call(["cmake", "--build", build_dir, "-j", str(os.cpu_count() or 2)])


setup(
    name="flash_rt_ros",
    version="0.1.0",
    description="Fast, faithful Vision-Language-Action policy inference (Pi0.5, Pi0, GR00T N1.7) for ROS 2",
    packages=find_packages(include=["flash_rt", "flash_rt.*", "flash_rt_ros", "flash_rt_ros.*"]),
    package_data={"flash_rt": ["configs/*.yaml"]},
    # ROS 2 (ament_python) layout: package index marker, manifest, launch + params files.
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/flash_rt_ros"]),
        ("share/flash_rt_ros", ["package.xml"]),
        ("share/flash_rt_ros/launch", sorted(glob("launch/*.launch.py"))),
        ("share/flash_rt_ros/config", sorted(glob("config/*.yaml") + glob("config/*.xml"))),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "torch>=2.4",
        "safetensors>=0.4",
        "sentencepiece>=0.1.99",
        "regex>=2023.0",
        "pyyaml>=6",
        "opencv-python-headless>=4.8",
    ],
    extras_require={"test": ["pytest>=7"], "kernels": KERNEL_REQUIREMENTS,
                    "bag": BAG_REQUIREMENTS, "jax": JAX_REQUIREMENTS,
                    "gpu-jpeg": GPU_JPEG_REQUIREMENTS},
    ext_modules=[CMakeExtension("flash_rt.flash_rt_kernels", "csrc")],
    cmdclass={"build_ext": BuildKernels},
    entry_points={"console_scripts": [
        "flash-rt-make-checkpoint = flash_rt.tools.make_checkpoint:main",
        "flash_rt_policy_node = flash_rt_ros.policy_node:main",
        "flash_rt_policy_managed_node = flash_rt_ros.managed_node:main",
        "flash_rt_synthetic_publisher = flash_rt_ros.synthetic:main",
        "flash-rt-ros-demo = flash_rt_ros.demo:main",
        "flash_rt_bag = flash_rt_ros.bag.__main__:main",
    ]},
)
