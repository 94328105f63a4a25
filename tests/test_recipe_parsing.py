"""Recipes: flat YAML through TrlParser; unknown keys, wrong types and bad values fail with one clear line."""

from __future__ import annotations

import pytest

from fem.errors import ConfigError
from fem.recipe import parse_configs


def write(tmp_path, text: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_parse_flat_recipe_with_overrides(tmp_path):
    path = write(
        tmp_path,
        "task: gsm8k\nscheme: star\nrounds: 3\nlearning_rate: 0.001\nlora_r: 4\noutput_dir: out\ntask_fields: {prompt: q}\n",
    )
    c = parse_configs(["--config", str(path), "--rounds", "5", "--power_cut", "uniform"])
    assert c.estep.scheme == "star" and c.em.rounds == 5 and c.proposal.power_cut == "uniform"
    assert c.mstep.learning_rate == 0.001 and c.model.lora_r == 4 and c.task.task_fields == {"prompt": "q"}
    assert c.model.use_peft and c.mstep.use_cpu


@pytest.mark.parametrize(
    "text, field, hint",
    [
        ("shceme: pps\n", "shceme", "scheme"),
        ("rounds: many\n", "rounds", "int"),
        ("rounds: 0\n", "rounds", ">= 1"),
        ("scheme: magic\n", "scheme", "one of"),
        ("estep_samples: 0\n", "estep_samples", ">= 1"),
        ("power_alpha: 0\n", "power_alpha", "> 0"),
        ("power_beta: -1\n", "power_beta", ">= 0"),
        ("power_epsilon: 2\n", "power_epsilon", "[0, 1]"),
        ("max_new_tokens: 16\npower_block_size: 32\n", "power_block_size", "exceeds"),
        ("lora_r: 0\n", "lora_r", ">= 1"),
        ("estep_samples: 2\nestep_max_keep: 3\n", "estep_max_keep", "exceeds"),
        ("task_fields: [a, b]\n", "task_fields", "wrong type"),
    ],
)
def test_bad_recipe_values_name_file_field_and_fix(tmp_path, text, field, hint):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        parse_configs(["--config", str(path)])
    line = info.value.one_line()
    assert str(path) in line and field in line and hint in line and "\n" not in line and "->" in line


@pytest.mark.parametrize(
    "text", ["!!python/object/apply:os.system ['echo pwned']\n", "- a\n- b\n", "", "a: [unclosed\n"]
)
def test_unsafe_or_malformed_yaml_is_rejected(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        parse_configs(["--config", str(path)])
    assert str(path) in info.value.one_line()


def test_bad_command_line_value_is_a_config_error(tmp_path):
    path = write(tmp_path, "task: gsm8k\n")
    with pytest.raises(ConfigError) as info:
        parse_configs(["--config", str(path), "--rounds", "abc"])
    assert "rounds" in info.value.one_line()


def test_field_names_are_unique_across_dataclasses():
    import dataclasses

    from fem.recipe import all_dataclasses

    seen: dict[str, str] = {}
    for cls in all_dataclasses():
        for f in dataclasses.fields(cls):
            if f.name in seen and seen[f.name] != cls.__name__:
                # our dataclasses may override TRL ones only by subclassing, never by a clashing name
                assert cls.__name__ in ("MStepConfig", "FemModelConfig"), (
                    f"{f.name} in {seen[f.name]} and {cls.__name__}"
                )
            seen.setdefault(f.name, cls.__name__)
