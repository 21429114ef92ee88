"""GEMM tuning on Hopper (H100 / H200).

cuBLASLt autotuning of every GEMM shape at load over 64 heuristic candidates, and fast FP8
accumulation for K <= 2048 (QKV, O, gate/up). The K = 4096 / 16384 down projections keep
full-precision accumulation: fast there measured no faster in the Pi0.5 replay on the H100
and lowered the worst chunk cosine (0.99924 vs 0.99929).
The fused gate/up + GeGLU GEMM (``fused_geglu``, sm_90a only) stays off: on the H100 it
measured at parity with cuBLASLt + the GeGLU kernel (91.2 vs 94.6 us a prefix layer at 712
rows, 127.3 vs 127.3 at 968; docs/performance.md run 13). Its config 3 (ping-pong tiles,
8-byte packed stores) took 0.05 ms off the 2-view replay on an H200 (2026-12-07, two
pairs) but on the H100 (run 15, h50, alternated twice) it added 0.1 ms at 1 and 2 views and
saved 0.07 at 3; precision >= 0.9993 on all six configurations. It is the config an A/B
gets (``FLASH_RT_FUSED_GEGLU=1``).
"""
from flash_rt.hardware.gemm_tuning import Tuning

TUNING = Tuning(fast_accum_max_k=2048, autotune=True, autotune_candidates=64,
                fused_geglu_config=3)
