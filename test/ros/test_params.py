"""Parameter validation (no rclpy): bounds for every numeric parameter, one line per refused
parameter, unknown names, types, and params files that cannot be read."""
from __future__ import annotations

import math
import os
from dataclasses import replace

import pytest
import yaml

from flash_rt_ros.params import (BOUNDS, DEFAULTS, PARAM_NAMES, InvalidParams, NodeParams,
                                 load_params_file, params_from_dict, read_params_file,
                                 validate)

VALID = NodeParams(joint_names=("a", "b"))
NUMERIC = [n for n in PARAM_NAMES if type(DEFAULTS[n]) in (int, float)]


def refused(**changes) -> dict[str, str]:
    with pytest.raises(InvalidParams) as err:
        validate(replace(VALID, **changes))
    return dict(err.value.errors)


def test_every_numeric_parameter_has_physical_bounds():
    assert sorted(BOUNDS) == sorted(NUMERIC)
    validate(VALID)  # the defaults are within them


@pytest.mark.parametrize("name", NUMERIC)
def test_out_of_range_values_are_refused_by_name(name):
    b = BOUNDS[name]
    as_type = type(DEFAULTS[name])
    below = b.lo - 1 if as_type is int else b.lo / 2 - 1e-9
    above = b.hi + 1 if as_type is int else b.hi * 2 + 1
    if b.zero_means:
        validate(replace(VALID, **{name: 0}))  # 0 = use the default
        below = -1 if below == 0 else below
    cases = [below, above] + ([math.nan, math.inf, -math.inf] if as_type is float else [])
    for value in cases:
        errors = refused(**{name: value})
        assert list(errors) == [name], (value, errors)
        assert ("finite" if isinstance(value, float) and not math.isfinite(value)
                else "must be in [") in errors[name]


def test_every_problem_is_reported_at_once_one_line_each():
    with pytest.raises(InvalidParams) as err:
        validate(replace(VALID, rate_hz=math.inf, diagnostics_period_s=0.0, horizon=100000,
                         seed=-1, trigger="sometimes"))
    lines = str(err.value).splitlines()
    assert sorted(line.split(":")[0] for line in lines) == sorted(
        ["rate_hz", "diagnostics_period_s", "horizon", "seed", "trigger"]), lines


def test_long_prompt_refused_at_start_up():
    errors = refused(prompt="x" * 2001, max_prompt_chars=2000)
    assert errors == {"prompt": "2001 characters, more than max_prompt_chars (2000)"}


def test_types_integers_for_floats_and_lists():
    p = params_from_dict({"joint_names": ["a"], "rate_hz": 10, "camera_topics": "/front/image"})
    assert p.rate_hz == 10.0 and isinstance(p.rate_hz, float)
    assert p.camera_topics == ("/front/image",)
    with pytest.raises(InvalidParams) as err:
        params_from_dict({"joint_names": ["a"], "horizon": 1.5, "rate_hz": "fast",
                          "seed": True, "camera_topics": [1, 2]})
    assert dict(err.value.errors) == {
        "horizon": "expected an integer, got 1.5 (float)",
        "rate_hz": "expected a number, got 'fast' (str)",
        "seed": "expected an integer, got True",
        "camera_topics": "expected a list of strings, got [1, 2]"}


def test_unknown_and_renamed_parameters_list_the_valid_ones():
    with pytest.raises(InvalidParams) as err:
        params_from_dict({"joint_names": ["a"], "checkpoint": "/x", "joint_state_topic": "/j"})
    errors = dict(err.value.errors)
    assert errors["joint_state_topic"] == "renamed: joint_state_topic is now joint_state_topics"
    assert errors["checkpoint"].startswith("unknown parameter; did you mean checkpoint_dir? ")
    assert all(n in errors["checkpoint"] for n in PARAM_NAMES)


def _write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text,why", [
    ("flash_rt_policy:\n  ros__parameters:\n    rate_hz: [1,\n", "not valid YAML: line"),
    ("- a\n- b\n", "expected a mapping of node names, got a list"),
    ("flash_rt_policy: 3\n", "section 'flash_rt_policy' needs a 'ros__parameters' mapping"),
    ("flash_rt_policy:\n  ros__parameters: [1]\n", "needs a 'ros__parameters' mapping"),
])
def test_malformed_params_file_names_file_and_cause(tmp_path, text, why):
    path = _write(tmp_path / "p.yaml", text)
    with pytest.raises(InvalidParams) as err:
        read_params_file(path)
    ((name, message),) = err.value.errors
    assert name == "--params-file" and path in message and why in message, message


def test_params_file_that_is_not_a_file(tmp_path):
    os.mkfifo(tmp_path / "fifo.yaml")
    for path, why in ((tmp_path / "absent.yaml", "file not found"),
                      (tmp_path / "fifo.yaml", "is a FIFO"), (tmp_path, "is a directory")):
        with pytest.raises(InvalidParams) as err:
            read_params_file(path)
        assert why in str(err.value) and str(path) in str(err.value)


def test_params_file_values_are_validated_with_the_file_named(tmp_path):
    path = _write(tmp_path / "p.yaml", yaml.safe_dump({"flash_rt_policy": {"ros__parameters": {
        "joint_names": ["a"], "rate_hz": float("nan")}}}))
    with pytest.raises(InvalidParams) as err:
        load_params_file(path)
    assert err.value.errors == [("rate_hz", f"must be a finite number, got nan (in {path})")]
