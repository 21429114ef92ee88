"""GEMM tuning on Jetson Thor: per-shape cuBLASLt autotuning at load, full-precision FP8
accumulation. Untuned on real hardware: no Thor is available to this project yet."""
from flash_rt.hardware.gemm_tuning import Tuning

TUNING = Tuning(fast_accum_max_k=0, autotune=True)
