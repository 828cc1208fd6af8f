import pytest

import attn_transition as at
from attn_transition.config import parse_config

pytestmark = pytest.mark.patch          # part of the floor suite (make test-floor)


def test_defaults_are_the_reference_defaults():
    c = at.ClassicConfig()
    assert (c.alpha, c.beta, c.intervals_per_layer, c.strategy, c.min_length) == (0.5, 0.1, 2, "adding", 400)
    s = at.SRAConfig()
    assert (s.begin_length, s.threshold_len, s.elimi_factor_inter, s.elimi_factor_outer,
            s.strengthen_factor_inter, s.strengthen_factor_outer, s.inter, s.outer,
            s.dynamic_threshold, s.dyna_div) == (100, 200, 0.5, 0.3, 4.0, 4.0, True, True, False, 20)


@pytest.mark.parametrize("cls,field,value,fragment", [
    (at.ClassicConfig, "alpha", 0.0, "(0, inf)"),
    (at.ClassicConfig, "alpha", -1, "(0, inf)"),
    (at.ClassicConfig, "alpha", float("nan"), "nan"),
    (at.ClassicConfig, "alpha", "0.5", "str"),
    (at.ClassicConfig, "beta", -0.1, "[0, inf)"),
    (at.ClassicConfig, "intervals_per_layer", 0, "[1, 64]"),
    (at.ClassicConfig, "intervals_per_layer", 2.0, "an int"),
    (at.ClassicConfig, "intervals_per_layer", True, "bool"),
    (at.ClassicConfig, "min_length", -5, "[0, inf)"),
    (at.SRAConfig, "begin_length", -1, "[0, inf)"),
    (at.SRAConfig, "threshold_len", 1.5, "an int"),
    (at.SRAConfig, "elimi_factor_inter", -0.5, "[0, inf)"),
    (at.SRAConfig, "strengthen_factor_outer", float("inf"), "inf"),
    (at.SRAConfig, "inter", 1, "True or False"),
    (at.SRAConfig, "dyna_div", 0, "[1, inf)"),
])
def test_each_field_is_validated(cls, field, value, fragment):
    with pytest.raises(at.ConfigError) as info:
        cls(**{field: value})
    message = str(info.value)
    assert f"{cls.__name__}.{field}" in message and repr(value) in message and fragment in message
    assert isinstance(info.value, ValueError)


def test_unknown_strategy_suggests_the_right_one():
    with pytest.raises(at.ConfigError, match=r"one of \['adding', 'multi'\].*did you mean 'adding'"):
        at.ClassicConfig(strategy="addding")


def test_parse_config():
    assert parse_config("classic") == at.ClassicConfig()
    assert parse_config("sra") == at.SRAConfig()
    assert parse_config("classic:alpha=1,beta=0.5,intervals_per_layer=3") == \
        at.ClassicConfig(alpha=1.0, beta=0.5, intervals_per_layer=3)
    assert parse_config("SRA: begin_length=5, inter=false") == at.SRAConfig(begin_length=5, inter=False)


@pytest.mark.parametrize("spec,fragment", [
    ("clasic", "did you mean 'classic'"),
    ("classic:alpah=1", "did you mean 'alpha'"),
    ("classic:alpha", "key=value"),
    ("classic:intervals_per_layer=two", "must be an int"),
    ("sra:inter=maybe", "true or false"),
    ("classic:alpha=-1", "(0, inf)"),
    ("", "non-empty"),
])
def test_parse_config_errors(spec, fragment):
    with pytest.raises(at.ConfigError) as info:
        parse_config(spec)
    assert fragment in str(info.value)


# ----------------------------------------------------------------------------- the text codec

from attn_transition.config import format_config, parse_configs, parse_grid  # noqa: E402

CODEC_CASES = [at.ClassicConfig(), at.ClassicConfig(alpha=1.5, beta=1.0), at.ClassicConfig(strategy="multi"),
               at.ClassicConfig(alpha=0.1234567), at.SRAConfig(), at.SRAConfig(threshold_len=64, outer=False),
               at.SRAConfig(elimi_factor_outer=0.25, dynamic_threshold=True)]


@pytest.mark.parametrize("config", CODEC_CASES, ids=format_config)
def test_format_config_is_canonical_and_parses_back(config):
    text = format_config(config)
    assert parse_config(text) == config, text
    assert format_config(parse_config(text)) == text


def test_format_config_keeps_the_labels_old_logs_hold():
    assert format_config(at.ClassicConfig()) == "classic"
    assert format_config(at.ClassicConfig(alpha=1.0, beta=0.5)) == "classic:alpha=1,beta=0.5"
    assert format_config(at.SRAConfig(outer=False)) == "sra:outer=false"


def test_parse_configs_drops_the_same_config_written_twice():
    got = parse_configs(["classic", "classic:alpha=0.5", "sra", "classic:alpha=1"])
    assert list(got) == ["classic", "sra", "classic:alpha=1"]


def test_grid_is_the_product_and_names_what_is_wrong():
    got = parse_grid("alpha=0.5,1;beta=0.1,0.5")
    assert [(c.alpha, c.beta) for c in got] == [(0.5, 0.1), (0.5, 0.5), (1.0, 0.1), (1.0, 0.5)]
    assert parse_grid("sra:threshold_len=50,100") == [at.SRAConfig(threshold_len=50), at.SRAConfig(threshold_len=100)]
    assert parse_grid("none") == [] and len(parse_grid("seed")) == 63
    for spec, fragment in [("alpa=1", "did you mean 'alpha'"), ("alpha=1;alpha=2", "appears twice"),
                           ("alpha=", "has no values"), ("alpha", "must look like name=value1,value2"),
                           ("alpha=-1", "alpha must be"), ("srb:x=1", "unknown schedule 'srb'")]:
        with pytest.raises(at.ConfigError, match=fragment):
            parse_grid(spec)
