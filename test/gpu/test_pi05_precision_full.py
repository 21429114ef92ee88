"""Full-size Pi0.5: the hopper fast path vs the FP32 reference (see full_precision.py).

FLASH_RT_FULL=1 runs it; FLASH_RT_FULL_CKPT names an existing full-size Pi0.5 checkpoint
and FLASH_RT_PRECISION_REPORT a JSON file for the numbers.
"""
from __future__ import annotations

import pytest

from flash_rt import load_model

from . import full_precision as fp

pytestmark = pytest.mark.skipif(not fp.ENABLED, reason=fp.SKIP_REASON)
RESULTS: list[dict] = []


@pytest.fixture(scope="module")
def full_ckpt(tmp_path_factory):
    return fp.full_checkpoint(tmp_path_factory, "pi05", "FLASH_RT_FULL_CKPT")


@pytest.fixture(scope="module")
def reference(gpu, full_ckpt):
    """The FP32 reference frontend, moved to the GPU (same weights as the fast path)."""
    return load_model(full_ckpt, hardware="cpu").to(gpu)


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    fp.write_report("FLASH_RT_PRECISION_REPORT", RESULTS)


@pytest.mark.parametrize("precision", fp.PRECISIONS)
@pytest.mark.parametrize("horizon", fp.HORIZONS)
@pytest.mark.parametrize("views", fp.VIEWS)
def test_full_size_fast_path_matches_fp32_reference(gpu, full_ckpt, reference, camera_images,
                                                    views, horizon, precision, tmp_path_factory):
    row = fp.measure("pi05", full_ckpt, reference, camera_images, views, horizon, precision,
                     tmp_path_factory.getbasetemp() / "flash_rt_cache")
    RESULTS.append(row)
    assert row["chunk_cosine"] >= fp.CHUNK_COSINE, row
