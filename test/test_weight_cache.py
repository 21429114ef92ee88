"""Weight / calibration cache and content hashes: bit-exact round trips, every corruption
is caught (logged, deleted, None), the memo avoids re-reading, concurrent stores stay valid."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time

import pytest
import torch

from flash_rt.core import content_hash as ch
from flash_rt.core.checkpoint import open_checkpoint
from flash_rt.core.content_hash import file_content_hash
from flash_rt.core.weight_cache import (
    CACHE_ENV, CacheKey, WeightCache, _warned_unwritable, default_cache_dir,
)

KEY = CacheKey(checkpoint_hash="ab" * 32, hardware="hopper", precision="fp8-e4m3",
               spec_version="3", kernels_version="0.1.0+sm90a",
               extra=(("views", "2"), ("horizon", "50")))


def _all_dtypes(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 5, generator=g) * 40
    x[0, :4] = torch.tensor([float("nan"), float("inf"), -0.0, 448.0])
    return {
        "f32": x, "bf16": x.bfloat16(), "f16": x.half(), "f64": x.double(),
        "fp8": x.clamp(-448, 448).to(torch.float8_e4m3fn),
        "fp8_e5m2": x.to(torch.float8_e5m2),
        "i32": torch.randint(-2**31, 2**31 - 1, (3, 4), generator=g, dtype=torch.int32),
        "i64": torch.randint(-2**62, 2**62, (7,), generator=g, dtype=torch.int64),
        "i16": torch.randint(-2**15, 2**15 - 1, (2, 3), generator=g, dtype=torch.int16),
        "i8": torch.randint(-128, 127, (9,), generator=g, dtype=torch.int8),
        "u8": torch.randint(0, 255, (2, 2, 3), generator=g, dtype=torch.uint8),
        "bool": torch.rand(4, 3, generator=g) > 0.5,
        "scalar": torch.tensor(3.25),
        "empty": torch.empty(0, 7, dtype=torch.bfloat16),
        "transposed": x.t(),  # non-contiguous input
    }


def _bits(t: torch.Tensor) -> torch.Tensor:
    """Raw bit pattern, so NaN payloads and -0.0 compare exactly."""
    t = t.contiguous()
    return t.view(torch.uint8) if t.dim() else t.reshape(1).view(torch.uint8)


def assert_bit_exact(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for k, w in want.items():
        g = got[k]
        assert g.dtype == w.dtype and g.shape == w.shape and g.device.type == "cpu", k
        assert g.is_contiguous(), k
        assert torch.equal(_bits(g), _bits(w)), k


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    return WeightCache(tmp_path / "cache")


def _stored(cache, kind="weights", key=KEY, tensors=None):
    tensors = _all_dtypes() if tensors is None else tensors
    path = cache.store(kind, key, tensors)
    assert path == cache.path(kind, key) and path.is_file()
    return path, tensors


def _left(cache, kind="weights"):
    return sorted(p.name for p in (cache.directory / kind).iterdir())


# -- keys and paths -------------------------------------------------------------------


def test_key_digest_is_stable_and_covers_every_field():
    same = CacheKey("ab" * 32, "hopper", "fp8-e4m3", "3", "0.1.0+sm90a",
                    extra={"horizon": "50", "views": "2"})
    assert same == KEY and same.digest() == KEY.digest()
    assert KEY.extra == (("horizon", "50"), ("views", "2"))
    # Pinned: a change here silently invalidates (or worse, aliases) every user's cache.
    assert KEY.digest() == "78caa35c9cb51e824de4a217538f8b4862d12ae179fef4e7a8661a5c0300b86a"
    variants = [CacheKey("cd" * 32, *[getattr(KEY, f) for f in
                                      ("hardware", "precision", "spec_version", "kernels_version")],
                         KEY.extra),
                CacheKey(KEY.checkpoint_hash, "thor", KEY.precision, KEY.spec_version,
                         KEY.kernels_version, KEY.extra),
                CacheKey(KEY.checkpoint_hash, KEY.hardware, KEY.precision, "4",
                         KEY.kernels_version, KEY.extra),
                CacheKey(KEY.checkpoint_hash, KEY.hardware, KEY.precision, KEY.spec_version,
                         KEY.kernels_version, (("views", "3"), ("horizon", "50")))]
    assert len({v.digest() for v in variants} | {KEY.digest()}) == 5
    assert json.loads(json.dumps(KEY.as_dict())) == KEY.as_dict()


def test_key_rejects_non_strings():
    with pytest.raises(TypeError, match="spec_version"):
        CacheKey("x", "hopper", "fp8", 3, "k")
    with pytest.raises(TypeError, match="extra"):
        CacheKey("x", "hopper", "fp8", "3", "k", extra=(("steps", 10),))
    with pytest.raises(ValueError, match="repeats"):
        CacheKey("x", "hopper", "fp8", "3", "k", extra=(("a", "1"), ("a", "2")))


def test_path_layout(cache):
    assert cache.path("calibration", KEY) == (cache.directory / "calibration" /
                                              f"{KEY.digest()[:24]}.safetensors")
    with pytest.raises(ValueError, match="kind"):
        cache.path("../escape", KEY)


# -- round trip -----------------------------------------------------------------------


def test_round_trip_every_dtype_bit_exact(cache):
    calls = []
    path = cache.store("weights", KEY, _all_dtypes(), progress=lambda d, n: calls.append((d, n)))
    n = len(_all_dtypes())
    assert calls == [(i + 1, n) for i in range(n)]
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["key"] == KEY.as_dict() and manifest["size"] == path.stat().st_size
    assert manifest["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    calls.clear()
    got = cache.load("weights", KEY, progress=lambda d, n: calls.append((d, n)))
    assert_bit_exact(got, _all_dtypes())
    assert calls[-1] == (n, n)
    assert _left(cache) == sorted(f"{KEY.digest()[:24]}{s}" for s in (".json", ".lock",
                                                                      ".safetensors"))


def test_kinds_are_separate(cache):
    cache.store("weights", KEY, {"w": torch.ones(2)})
    cache.store("calibration", KEY, {"scale": torch.full((3,), 0.5)})
    assert torch.equal(cache.load("weights", KEY)["w"], torch.ones(2))
    assert torch.equal(cache.load("calibration", KEY)["scale"], torch.full((3,), 0.5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_store_from_gpu(cache):
    t = {k: v.cuda() for k, v in _all_dtypes().items()}
    cache.store("weights", KEY, t)
    assert_bit_exact(cache.load("weights", KEY), _all_dtypes())


def test_programming_errors_raise(cache):
    with pytest.raises(TypeError, match="'w'"):
        cache.store("weights", KEY, {"w": [1.0, 2.0]})
    with pytest.raises(TypeError):
        cache.store("weights", KEY, {3: torch.ones(1)})
    with pytest.raises(ValueError, match="complex"):
        cache.store("weights", KEY, {"c": torch.ones(2, dtype=torch.complex64)})
    with pytest.raises(ValueError, match="kind"):
        cache.store("a/b", KEY, {"w": torch.ones(1)})
    assert not (cache.directory / "weights").exists()


# -- every bad file: warning naming it, files removed, None ---------------------------


def _expect_discarded(cache, caplog, reason, key=KEY, kind="weights"):
    path = cache.path(kind, key)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flash_rt.core.weight_cache"):
        assert cache.load(kind, key) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and reason in warnings[0], warnings
    assert not path.exists() and not path.with_suffix(".json").exists()


def test_missing_cache_is_none_with_info(cache, caplog):
    with caplog.at_level(logging.INFO, logger="flash_rt.core.weight_cache"):
        assert cache.load("weights", KEY) is None
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert not cache.directory.exists()  # a miss creates nothing


def test_stale_key_on_digest_prefix_collision(cache, caplog):
    path, _ = _stored(cache)
    other = CacheKey(KEY.checkpoint_hash, KEY.hardware, KEY.precision, "4", KEY.kernels_version)
    os.replace(path, cache.path("weights", other))  # as if both digests shared 24 hex digits
    os.replace(path.with_suffix(".json"), cache.manifest_path("weights", other))
    _expect_discarded(cache, caplog, "stale key (differs in extra, spec_version)", key=other)


def test_stale_key_in_file_header(cache, caplog):
    path, _ = _stored(cache)
    other = CacheKey(KEY.checkpoint_hash, "thor", KEY.precision, KEY.spec_version,
                     KEY.kernels_version)
    manifest = json.loads(path.with_suffix(".json").read_text())
    manifest["key"] = other.as_dict()  # a manifest that agrees, a data file that does not
    cache.manifest_path("weights", other).parent.mkdir(parents=True, exist_ok=True)
    cache.manifest_path("weights", other).write_text(json.dumps(manifest))
    os.replace(path, cache.path("weights", other))
    _expect_discarded(cache, caplog, "stale key (file header)", key=other)


def test_truncated_data_file(cache, caplog):
    path, _ = _stored(cache)
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size - 5)
    _expect_discarded(cache, caplog, "truncated")


def test_flipped_data_byte_is_a_checksum_mismatch(cache, caplog):
    path, _ = _stored(cache)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x10  # inside the last tensor's data
    path.write_bytes(bytes(raw))
    _expect_discarded(cache, caplog, "checksum mismatch")


def test_flipped_header_dtype_is_caught(cache, caplog):
    """F16 -> I16 keeps every size right; only the whole-file checksum sees it."""
    path, _ = _stored(cache, tensors={"h": torch.ones(4, dtype=torch.float16)})
    raw = path.read_bytes()
    assert raw.count(b'"F16"') == 1
    path.write_bytes(raw.replace(b'"F16"', b'"I16"'))
    _expect_discarded(cache, caplog, "checksum mismatch")


def test_missing_manifest_means_incomplete(cache, caplog):
    path, _ = _stored(cache)
    path.with_suffix(".json").unlink()
    _expect_discarded(cache, caplog, "incomplete (no manifest)")


def test_garbled_manifest(cache, caplog):
    path, _ = _stored(cache)
    path.with_suffix(".json").write_text("{not json")
    _expect_discarded(cache, caplog, "unreadable manifest")


def test_missing_data_file(cache, caplog):
    path, _ = _stored(cache)
    path.unlink()
    _expect_discarded(cache, caplog, "data file missing")


def test_rebuild_after_discard(cache, caplog):
    path, tensors = _stored(cache)
    path.write_bytes(b"junk")
    _expect_discarded(cache, caplog, "truncated")
    _stored(cache, tensors=tensors)
    assert_bit_exact(cache.load("weights", KEY), tensors)


# -- switches, directories, concurrency -----------------------------------------------


def test_disabled_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    off = WeightCache(tmp_path / "c", enabled=False)
    assert off.store("weights", KEY, {"w": torch.ones(1)}) is None
    assert off.load("weights", KEY) is None
    _stored(WeightCache(tmp_path / "c"))
    assert off.load("weights", KEY) is None  # present, but caching is off
    monkeypatch.setenv(CACHE_ENV, "off")
    env_off = WeightCache(tmp_path / "c")  # the env switch wins over an explicit directory
    assert not env_off.enabled and env_off.load("weights", KEY) is None
    assert env_off.store("weights", KEY, {"w": torch.ones(1)}) is None


def test_env_var_directory(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "envcache"))
    assert default_cache_dir() == tmp_path / "envcache"
    path, tensors = _stored(WeightCache())
    assert path.parent == tmp_path / "envcache" / "weights"
    assert_bit_exact(WeightCache().load("weights", KEY), tensors)
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "flash_rt"


def test_unwritable_directory_warns_once(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    (tmp_path / "file").write_text("not a directory")
    bad = WeightCache(tmp_path / "file" / "cache")
    _warned_unwritable.discard(str(bad.directory))
    with caplog.at_level(logging.WARNING, logger="flash_rt.core.weight_cache"):
        assert bad.store("weights", KEY, {"w": torch.ones(1)}) is None
        assert bad.store("calibration", KEY, {"w": torch.ones(1)}) is None
        assert bad.load("weights", KEY) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "not writable" in warnings[0], warnings


def test_two_stores_of_one_key_leave_one_valid_file(cache):
    sets = [_all_dtypes(seed) for seed in range(4)]
    _stored(cache, tensors=sets[0])
    _stored(cache, tensors=sets[1])
    assert_bit_exact(cache.load("weights", KEY), sets[1])
    for _ in range(3):  # racing writers, with a reader in the mix
        start = threading.Barrier(len(sets) + 1)
        errors = []

        def run(fn):
            try:
                start.wait()
                fn()
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(lambda s=s: cache.store("weights", KEY, s),))
                   for s in sets]
        threads.append(threading.Thread(target=run, args=(lambda: cache.load("weights", KEY),)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        got = cache.load("weights", KEY)
        assert got is not None
        winner = [s for s in sets if torch.equal(_bits(got["f32"]), _bits(s["f32"]))]
        assert len(winner) == 1
        assert_bit_exact(got, winner[0])
        assert len(_left(cache)) == 3  # data, manifest, lock: no temporaries left


def test_stale_temporaries_are_swept(cache):
    folder = cache.directory / "weights"
    folder.mkdir(parents=True)
    old, fresh = folder / "x.safetensors.1.ab.tmp", folder / "y.safetensors.2.cd.partial"
    for p in (old, fresh):
        p.write_bytes(b"half written")
    os.utime(old, (time.time() - 7200,) * 2)
    _stored(cache)
    assert not old.exists() and fresh.exists()


# -- content hashes -------------------------------------------------------------------


@pytest.fixture
def counted_reads(monkeypatch):
    calls = []
    real = ch._read_chunks

    def counting(fh, *args):
        calls.append(fh.name)
        yield from real(fh, *args)
    monkeypatch.setattr(ch, "_read_chunks", counting)
    return calls


def test_content_hash_matches_hashlib_across_chunks(tmp_path):
    data = os.urandom(2 * ch.CHUNK_BYTES + 12345)
    (tmp_path / "big.bin").write_bytes(data)
    assert file_content_hash(tmp_path / "big.bin") == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty.bin").write_bytes(b"")
    assert file_content_hash(tmp_path / "empty.bin") == hashlib.sha256(b"").hexdigest()
    with open(tmp_path / "big.bin", "rb", buffering=0) as fh:
        assert b"".join(bytes(c) for c in ch._read_chunks(fh, 1000)) == data


def test_content_hash_memo(tmp_path, counted_reads, caplog):
    f, memo = tmp_path / "model.safetensors", tmp_path / "memo"
    f.write_bytes(b"a" * 1000)
    with caplog.at_level(logging.INFO, logger="flash_rt.core.content_hash"):
        first = file_content_hash(f, memo)
    assert first == hashlib.sha256(b"a" * 1000).hexdigest() and len(counted_reads) == 1
    assert any("computed sha256" in r.getMessage() and str(f) in r.getMessage()
               for r in caplog.records)
    assert file_content_hash(f, memo) == first and len(counted_reads) == 1  # memo hit
    link = tmp_path / "link.safetensors"
    link.symlink_to(f)
    assert file_content_hash(link, memo) == first and len(counted_reads) == 1  # by realpath
    assert file_content_hash(f) == first and len(counted_reads) == 2  # no memo: full read
    assert sorted(p.name for p in memo.iterdir()) == ["content_hashes.json"]

    f.write_bytes(b"b" * 1000)  # same size, same inode: only mtime tells
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second = file_content_hash(f, memo)
    assert second == hashlib.sha256(b"b" * 1000).hexdigest() and len(counted_reads) == 3
    with open(f, "ab") as fh:  # size changes
        fh.write(b"b")
    assert file_content_hash(f, memo) == hashlib.sha256(b"b" * 1001).hexdigest()
    os.replace(tmp_path / "model.safetensors", tmp_path / "old")
    f.write_bytes(b"c" * 1001)  # a new inode
    os.utime(f, ns=(st.st_atime_ns, (tmp_path / "old").stat().st_mtime_ns))
    assert file_content_hash(f, memo) == hashlib.sha256(b"c" * 1001).hexdigest()
    assert len(counted_reads) == 5
    entries = json.loads((memo / "content_hashes.json").read_text())["files"]
    assert list(entries) == [os.path.realpath(f)]  # outdated versions are dropped


def test_garbled_memo_is_ignored(tmp_path):
    f, memo = tmp_path / "w.bin", tmp_path / "memo"
    f.write_bytes(b"xyz")
    memo.mkdir()
    (memo / "content_hashes.json").write_text("[broken")
    assert file_content_hash(f, memo) == hashlib.sha256(b"xyz").hexdigest()
    assert json.loads((memo / "content_hashes.json").read_text())["version"] == 1


def test_bundle_content_hash(tiny_pi05_ckpt, tmp_path, counted_reads):
    bundle = open_checkpoint(tiny_pi05_ckpt, "pi05")
    want = hashlib.sha256((tiny_pi05_ckpt / "model.safetensors").read_bytes()).hexdigest()
    assert bundle.content_hash() == want
    assert bundle.content_hash(tmp_path) == want == bundle.content_hash(tmp_path)
    assert len(counted_reads) == 2
    assert WeightCache(tmp_path).content_hash(bundle.reader.path) == want
    assert len(counted_reads) == 2  # the cache memoises in its own directory
