"""Full-size Pi0: the hopper fast path vs the FP32 reference (full_precision.py), with the
state token's K/V row compared too.

FLASH_RT_FULL=1 runs it; FLASH_RT_FULL_PI0_CKPT names an existing full-size Pi0 checkpoint
and FLASH_RT_PI0_PRECISION_REPORT a JSON file for the numbers.
"""
import pytest

from .full_precision import (ENABLED, SKIP_REASON, full_ckpt, reference,  # noqa: F401
                             results, test_full_size_fast_path_matches_fp32_reference)

MODEL, CKPT_ENV, REPORT_ENV = "pi0", "FLASH_RT_FULL_PI0_CKPT", "FLASH_RT_PI0_PRECISION_REPORT"
pytestmark = pytest.mark.skipif(not ENABLED, reason=SKIP_REASON)
