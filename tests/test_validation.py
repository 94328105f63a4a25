"""Config rules are declared once per field (metadata) and read by one validator: every rule of every config fires
with the field and a fix, through the real recipe parser; a value inside the rules passes."""

from __future__ import annotations

import dataclasses

import pytest
from helpers import SMOKE_RECIPE

from fem.errors import ConfigError
from fem.recipe import all_dataclasses, parse_configs, recipe_parser
from fem.validation import RULE_KEYS, argparse_metadata, check_field, fem_field_names


def ruled_fields() -> list[tuple[str, dict]]:
    out = []
    for cls in all_dataclasses():
        own = fem_field_names(cls)
        for f in dataclasses.fields(cls):
            rules = {k: v for k, v in f.metadata.items() if k in RULE_KEYS}
            if rules and f.name in own:
                out.append((f.name, rules))
    return out


def breaking_value(rules: dict) -> str:
    if "choices" in rules:
        return "not_a_choice"
    if rules.get("nonempty"):
        return ""
    if "gt" in rules:
        return str(rules["gt"])
    if "min" in rules:
        return str(rules["min"] - 1)
    return str(rules["max"] + 1)


def test_rules_cover_the_configs():
    names = {name for name, _ in ruled_fields()}
    assert {"scheme", "top_p", "rounds", "train_limit", "learning_rate", "lora_r", "model_name_or_path"} <= names
    assert len(names) >= 25


@pytest.mark.parametrize("name,rules", ruled_fields(), ids=[name for name, _ in ruled_fields()])
def test_every_rule_fires_with_field_and_fix(name, rules):
    with pytest.raises(ConfigError) as info:
        parse_configs(["--config", SMOKE_RECIPE, f"--{name}", breaking_value(rules)])
    error = info.value
    assert error.field == name and error.fix and error.file == SMOKE_RECIPE, error.one_line()


def test_messages_state_the_bound():
    cases = [
        ({"min": 1, "fix": "f"}, 0, "must be >= 1 (got 0)"),
        ({"gt": 0, "fix": "f"}, 0.0, "must be > 0 (got 0.0)"),
        ({"gt": 0, "max": 1, "fix": "f"}, 1.5, "must be in (0, 1] (got 1.5)"),
        ({"min": 0, "max": 1, "fix": "f"}, -1, "must be in [0, 1] (got -1)"),
        ({"choices": ("a", "b")}, "c", "'c' is not one of a, b"),
        ({"nonempty": True, "fix": "f"}, None, "is empty"),
    ]
    for rules, value, message in cases:
        with pytest.raises(ConfigError) as info:
            check_field("x", value, rules)
        assert info.value.message == message
    for rules, value in (
        ({"min": 1, "fix": "f"}, None),
        ({"gt": 0, "max": 1, "fix": "f"}, 1.0),
        ({"choices": ("a",)}, "a"),
    ):
        check_field("x", value, rules)


def test_argparse_never_sees_the_rules():
    assert argparse_metadata({"help": "h", "min": 1, "fix": "f", "choices": ("a",)}) == {"help": "h"}
    parser = recipe_parser()  # argparse would refuse min= / fix= keywords while the parser is built
    scheme = next(a for a in parser._actions if a.dest == "scheme")
    assert scheme.choices is None  # fem checks choices itself, with its own message
    log_level = next(a for a in parser._actions if a.dest == "log_level")
    assert log_level.choices  # a TRL field keeps TRL's choices


def float_fields() -> list[str]:
    """Every float field of every config, fem's and TRL's (the rule applies to all of them)."""
    return sorted(
        {f.name for cls in all_dataclasses() for f in dataclasses.fields(cls) if f.init and "float" in str(f.type)}
    )


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_no_numeric_field_takes_a_non_finite_value(value, tmp_path):
    """``num_train_epochs inf`` passed --dry_run, then crashed (issue 17, item 6); the finiteness rule is one rule in
    the validator, applied to every field."""
    names = float_fields()
    assert {"num_train_epochs", "learning_rate", "temperature", "max_grad_norm", "reward_threshold"} <= set(names)
    for name in names:
        with pytest.raises(ConfigError) as info:
            parse_configs(["--config", SMOKE_RECIPE, "--output_dir", str(tmp_path), f"--{name}={value}"])
        assert info.value.field == name and "finite" in info.value.message, (name, info.value.one_line())
