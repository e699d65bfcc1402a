"""Property-based fuzzing of what users type: notebook parameters and grid files. Whatever they hold, the
answer is a valid config or a ConfigError that names the field or key; never a bare traceback."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maple_utils.config import ConfigError, RunConfig, validate_run
from maple_utils.grid.planner import plan_grid

FIELDS = sorted(RunConfig.model_fields)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["en", "xnli", "tiny-llama", "alpaca", "local", "../x", "/abs"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(field=st.sampled_from(FIELDS), value=values)
def test_any_value_of_any_parameter_is_accepted_or_named(field, value):
    try:
        validate_run({field: value})
    except ConfigError as err:
        assert field in str(err), (field, value, str(err))


@FUZZ
@given(
    extra=st.dictionaries(
        st.text(min_size=1, max_size=10).filter(lambda k: k not in FIELDS), values, min_size=1, max_size=2
    )
)
def test_an_unknown_parameter_is_named(extra):
    try:
        validate_run(extra)
    except ConfigError as err:
        # named as typed, or escaped as Python writes it (a lone surrogate, a control character)
        assert any(key in str(err) or repr(key)[1:-1] in str(err) for key in extra), (extra, str(err))
    else:
        raise AssertionError(f"unknown keys accepted: {extra}")


grid_sections = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.text(max_size=8), scalars),
        "fixed": st.one_of(st.dictionaries(st.sampled_from(FIELDS), values, max_size=3), values),
        "axes": st.one_of(st.dictionaries(st.sampled_from(FIELDS), st.lists(values, max_size=3), max_size=2), values),
        "exclude": st.one_of(
            st.lists(st.dictionaries(st.sampled_from(FIELDS), values, max_size=2), max_size=2), values
        ),
        "evaluate_base_models": values,
        "slurm": values,
        "surprise": values,
    },
)


@FUZZ
@given(grid=st.one_of(grid_sections, values))
def test_any_grid_file_plans_or_fails_naming_the_file(grid, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(grid), encoding="utf-8")
    try:
        plan_grid(path, folder / "out")
    except ConfigError as err:
        assert str(path) in str(err), str(err)
    assert not (folder / "out").exists()  # planning writes nothing
