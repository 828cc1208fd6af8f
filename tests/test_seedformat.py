"""The seed format's output-key codec (``decode_al_05_be_01_lay_2``, ``decode_sra_thr_64``):
every field of every config is written and read back, and a field the key table does not
name fails loudly instead of being written as something else."""

from __future__ import annotations

import dataclasses

import pytest

import attn_transition as at
from attn_transition.config import format_config, seed_grid
from attn_transition.evaluation import seedformat
from attn_transition.evaluation.seedformat import (KEY_NAMES, KEYED_SCHEDULES, PLAIN_KEY, check_key_names, config_key,
                                                   parse_config_key)
from custom_schedule import ShiftConfig


def _other(cls: type, field: dataclasses.Field, step: int = 1):
    """A valid value of ``field`` that is not its default (a new field's type must be added here)."""
    default = field.default
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 3 * step
    if isinstance(default, float):
        return default + 0.25 * step
    if field.name == "strategy":
        return next(s for s in cls.STRATEGIES if s != default)
    raise AssertionError(f"{cls.__name__}.{field.name}: give the test a non-default value of this field's type")


def _every_field_changed_alone():
    return [cls(**{f.name: _other(cls, f)}) for cls in KEYED_SCHEDULES for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("config", _every_field_changed_alone(), ids=format_config)
def test_every_field_alone_is_written_and_read_back(config):
    key = config_key(config, strict=True)
    assert parse_config_key(key) == config, key
    assert key != config_key(type(config)()), "the changed field is missing from the key"


@pytest.mark.parametrize("cls", KEYED_SCHEDULES, ids=lambda c: c.__name__)
def test_all_fields_changed_at_once_read_back(cls):
    for step in (1, 2):
        config = cls(**{f.name: _other(cls, f, step) for f in dataclasses.fields(cls)})
        assert parse_config_key(config_key(config, strict=True)) == config


def test_the_key_table_names_every_field_of_every_schedule():
    assert KEYED_SCHEDULES == (at.ClassicConfig, at.SRAConfig)
    assert set(KEY_NAMES) == set(KEYED_SCHEDULES)
    for cls, names in KEY_NAMES.items():
        assert list(names) == [f.name for f in dataclasses.fields(cls)]


def test_the_seeds_own_keys_and_grid():
    grid = seed_grid()
    assert len(grid) == 63 and len({config_key(c) for c in grid}) == 63
    for config in grid:
        assert parse_config_key(config_key(config, strict=True)) == config
    assert config_key(at.ClassicConfig(alpha=0.5, beta=0.1, intervals_per_layer=2)) == "decode_al_05_be_01_lay_2"
    assert config_key(at.ClassicConfig(alpha=1.5, beta=1.5, min_length=20)) == "decode_al_15_be_15_lay_2_min20"
    assert config_key(at.ClassicConfig(strategy="multi")) == "decode_al_05_be_01_lay_2_multi"
    assert config_key(at.SRAConfig()) == "decode_sra"
    assert config_key(at.SRAConfig(begin_length=5, threshold_len=50, elimi_factor_outer=0.5)) == \
        "decode_sra_beg_5_thr_50_eo_0p5"
    assert config_key(at.SRAConfig(outer=False, dynamic_threshold=True)) == "decode_sra_noouter_dynamicthreshold"
    assert parse_config_key(PLAIN_KEY) is None


def test_a_config_the_keys_cannot_name_is_refused_under_strict():
    with pytest.raises(at.ConfigError, match="cannot be named"):
        config_key(at.ClassicConfig(alpha=12.0), strict=True)
    assert config_key(at.SRAConfig(elimi_factor_inter=0.1234567), strict=True) == "decode_sra_ei_0p1234567"


@pytest.mark.parametrize("key, fragment", [
    ("decode_sra_zz", "unrecognised part 'zz'"),
    ("decode_sra_thr_x", "bad value 'x' for threshold_len"),
    ("decode_sra_div_0", "bad value '0' for dyna_div"),
    ("decode_sra_thr_5_thr_6", "names threshold_len twice"),
    ("decode_al_05_be_01_lay_2_addng", "bad value 'addng' for strategy"),
    ("decode_al_05_be_01_lay_2_zz5", "unrecognised part 'zz5'"),
    ("decode_al_05_be_01_lay_2_al1", "unrecognised part 'al1'"),
    ("decode_other", "neither 'decode_or'"),
])
def test_bad_keys_name_what_is_wrong(key, fragment):
    with pytest.raises(at.ConfigError, match=fragment):
        parse_config_key(key)


# ------------------------------------------------------------------ a field the table does not name

@dataclasses.dataclass(frozen=True)
class WiderSRA(at.SRAConfig):
    new_factor: float = 1.0


@dataclasses.dataclass(frozen=True)
class WiderClassic(at.ClassicConfig):
    new_flag: bool = False


@pytest.mark.parametrize("config", [WiderSRA(new_factor=2.0), WiderSRA(), WiderClassic(new_flag=True)],
                         ids=["sra-changed", "sra-default", "classic-flag"])
def test_a_config_with_a_field_the_table_lacks_is_refused_not_written(config):
    # Before, a non-boolean SRA field missing from the abbreviations was written as a flag ("newfactor").
    name = [f.name for f in dataclasses.fields(config)][-1]
    with pytest.raises(TypeError, match=f"field '{name}' has no abbreviation"):
        config_key(config)


def test_the_import_check_stops_a_schedule_whose_table_misses_a_field(monkeypatch):
    with pytest.raises(TypeError, match=r"no output-key table for SRAConfig"):
        check_key_names({at.ClassicConfig: KEY_NAMES[at.ClassicConfig]})
    wider = {**KEY_NAMES, WiderSRA: KEY_NAMES[at.SRAConfig]}
    with pytest.raises(TypeError, match=r"WiderSRA is wrong: field 'new_factor' has no abbreviation"):
        check_key_names(wider)
    check_key_names({**wider, WiderSRA: {**KEY_NAMES[at.SRAConfig], "new_factor": "nf"}})
    monkeypatch.setitem(seedformat.KEY_NAMES, WiderSRA, {**KEY_NAMES[at.SRAConfig], "new_factor": "nf"})
    config = WiderSRA(new_factor=2.0)
    assert config_key(config) == "decode_sra_nf_2"


@pytest.mark.parametrize("change, fragment", [
    ({"inter": "in"}, "field 'inter' is a boolean but is not written as a FLAG"),
    ({"dyna_div": seedformat.FLAG}, "field 'dyna_div' is not a boolean but is written as a FLAG"),
    ({"dyna_div": "thr"}, "the word 'thr' is used twice"),
    ({"dyna_div": "noouter"}, "the word 'noouter' is used twice"),
    ({"dyna_div": "Div2"}, "is not lowercase letters"),
    ({"extra": "ex"}, "names 'extra', which is not a field"),
])
def test_the_import_check_refuses_a_wrong_table(change, fragment):
    with pytest.raises(TypeError, match=fragment):
        check_key_names({**KEY_NAMES, at.SRAConfig: {**KEY_NAMES[at.SRAConfig], **change}})


def test_a_schedule_the_scheme_does_not_name_is_refused_naming_it():
    # A registered schedule is a config everywhere, but the seed's scheme has no words for it.
    config = ShiftConfig(fraction=0.5)
    with pytest.raises(at.ConfigError, match=r"schedule 'shift' \(custom_schedule.ShiftConfig\) has no output key "
                                             r"in the seed's format, which names only 'classic' and 'sra' configs; "
                                             r"label its runs with its spec 'shift:fraction=0.5' instead"):
        config_key(config)
    with pytest.raises(TypeError, match="not a transition config"):
        config_key("classic")
