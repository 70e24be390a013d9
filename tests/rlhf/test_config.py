"""Config parsing and the CLI's error path: bad keys, types, files and inputs fail early, on one line, leaving nothing."""

import json
from pathlib import Path

import pytest
from trl import DPOConfig, ModelConfig

from rlhf.cli import STAGES
from rlhf.cli import main as cli
from rlhf.config import parse_stage_args
from rlhf.dpo import DpoArguments
from rlhf.errors import RlhfError

DPO_TYPES = (DpoArguments, DPOConfig, ModelConfig)


def yaml_file(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_unknown_key_names_key_and_file(tmp_path):
    path = yaml_file(tmp_path, "betta: 0.1\n")
    with pytest.raises(RlhfError, match=rf"{path}: unknown key 'betta'.*did you mean 'beta'"):
        parse_stage_args("dpo", DPO_TYPES, ["--config", path])


def test_wrong_type_names_key_and_file(tmp_path):
    path = yaml_file(tmp_path, "learning_rate: fast\n")
    with pytest.raises(RlhfError, match=rf"{path}: key 'learning_rate' expects float"):
        parse_stage_args("dpo", DPO_TYPES, ["--config", path])
    path = yaml_file(tmp_path, "use_peft: maybe\n", "b.yaml")
    with pytest.raises(RlhfError, match=rf"{path}: key 'use_peft' expects true or false"):
        parse_stage_args("dpo", DPO_TYPES, ["--config", path])


def test_missing_config_file(tmp_path):
    with pytest.raises(RlhfError, match="config file not found: .*nope.yaml"):
        parse_stage_args("dpo", DPO_TYPES, ["--config", str(tmp_path / "nope.yaml")])


def test_cli_override_beats_yaml_beats_defaults(tmp_path):
    path = yaml_file(tmp_path, "beta: 0.3\nlearning_rate: 1.0e-4\ntrain_file: a.jsonl\n")
    args, training, model, config_path = parse_stage_args(
        "dpo", DPO_TYPES, ["--config", path, "--beta", "0.5"], defaults={"beta": 0.2, "max_steps": 7, "use_peft": True, "bf16": False})
    assert training.beta == 0.5  # command line over YAML
    assert training.learning_rate == 1e-4 and args.train_file == "a.jsonl"  # YAML over defaults
    assert training.max_steps == 7 and model.use_peft is True  # project defaults over TRL's
    assert config_path == path


def run_cli(argv, capsys):
    code = cli(argv)
    return code, capsys.readouterr().err.strip()


def test_broken_preference_line_fails_cleanly(tiny_model, tmp_path, capsys):
    data = tmp_path / "prefs.jsonl"
    good = json.dumps({"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."})
    data.write_text(f"{good}\n{good}\n{{\"prompt\": \"Hi\", \"chosen\": \n")
    out = tmp_path / "run"
    code, err = run_cli(["dpo", "--model_name_or_path", tiny_model, "--train_file", str(data), "--output_dir", str(out)], capsys)
    assert code == 2 and "\n" not in err and "Traceback" not in err
    assert f"{data}:3: invalid JSON" in err
    assert not out.exists()


def test_unknown_key_in_config_fails_cleanly(tmp_path, capsys):
    config = yaml_file(tmp_path, f"output_dir: {tmp_path / 'run'}\nlearning_rat: 0.1\n")
    code, err = run_cli(["sft", "--config", config], capsys)
    assert code == 2 and "\n" not in err
    assert "unknown key 'learning_rat'" in err and config in err
    assert not (tmp_path / "run").exists()


def test_missing_model_path_fails_cleanly(tmp_path, capsys):
    data = tmp_path / "prefs.jsonl"
    data.write_text(json.dumps({"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}) + "\n")
    out = tmp_path / "run"
    out.mkdir()  # an existing, empty output folder must stay empty
    code, err = run_cli(["dpo", "--model_name_or_path", str(tmp_path / "no-such-model"), "--train_file", str(data),
                         "--output_dir", str(out)], capsys)
    assert code == 2 and "\n" not in err
    assert "no-such-model' does not exist" in err
    assert list(out.iterdir()) == []


def test_help_lists_stages_and_dpo_help_explains_beta(capsys):
    assert cli(["--help"]) == 0
    text = capsys.readouterr().out
    for stage in ("generate", "sft", "reward", "dpo", "rl", "eval", "export"):
        assert f"  {stage}" in text and STAGES[stage] in text
    with pytest.raises(SystemExit) as exc:
        cli(["dpo", "--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    assert "--beta" in help_text and "--train_file" in help_text and "rlhf dpo --config" in help_text


# --- recipes: `--config NAME` and the example data, from any working directory -------------------------------

from rlhf.config import RECIPES, find_config  # noqa: E402
from rlhf.dpo import stage_defaults as dpo_defaults  # noqa: E402
from rlhf.loop import LoopArguments  # noqa: E402


@pytest.mark.parametrize(("value", "stage", "expected"), [
    ("quickstart", "loop", "quickstart.yaml"),
    ("smoke", "loop", "smoke/loop.yaml"),
    ("quickstart", "sft", "quickstart/sft.yaml"),
    ("smoke/dpo", "dpo", "smoke/dpo.yaml"),
    ("configs/smoke/sft.yaml", "sft", "smoke/sft.yaml"),  # the checkout's old layout
    ("configs/quickstart.yaml", "loop", "quickstart.yaml"),
])
def test_recipe_names_find_the_shipped_files(value, stage, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_config(value, stage) == RECIPES / expected


def test_an_existing_file_wins_and_an_unknown_name_lists_the_recipes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smoke").write_text("beta: 0.2\n")  # a file of the recipe's name in the working directory
    assert find_config("smoke", "dpo") == Path("smoke")
    with pytest.raises(RlhfError, match=r"config file not found: quickstrat \(.*quickstart, smoke"):
        find_config("quickstrat", "dpo")
    with pytest.raises(RlhfError, match="config file not found"):
        find_config("../quickstart", "loop")


def test_a_recipe_reads_its_example_data_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, *_, config_path = parse_stage_args("dpo", DPO_TYPES, ["--config", "smoke"], defaults=dpo_defaults())
    assert config_path == str(RECIPES / "smoke" / "dpo.yaml")
    assert args.train_file == str(RECIPES / "data" / "smoke" / "preferences.jsonl")
    # a file of the same relative path in the working directory is the user's, and wins
    (tmp_path / "data" / "smoke").mkdir(parents=True)
    (tmp_path / "data" / "smoke" / "preferences.jsonl").write_text("{}\n")
    args, *_ = parse_stage_args("dpo", DPO_TYPES, ["--config", "smoke"], defaults=dpo_defaults())
    assert args.train_file == "data/smoke/preferences.jsonl"


def test_the_loop_recipe_names_its_stage_recipes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, config_path = parse_stage_args("loop", (LoopArguments,), ["--config", "quickstart"])
    assert config_path == str(RECIPES / "quickstart.yaml")
    assert args.sft_config == str(RECIPES / "quickstart" / "sft.yaml")
    assert args.export_config == str(RECIPES / "quickstart" / "export.yaml")
    args, _ = parse_stage_args("loop", (LoopArguments,), ["--config", "smoke"])
    assert args.prompts_file == str(RECIPES / "data" / "smoke" / "loop_prompts.jsonl")
    assert args.dpo_config == str(RECIPES / "smoke" / "dpo.yaml")


def test_old_test_size_spelling_is_refused_naming_test_fraction(tmp_path):
    path = yaml_file(tmp_path, "test_size: 0.2\n")
    with pytest.raises(RlhfError, match=rf"{path}: key 'test_size' of `rlhf dpo` is now spelled test_fraction"):
        parse_stage_args("dpo", DPO_TYPES, ["--config", path], defaults=dpo_defaults())
    for flag in ("--test_size", "--test-size"):
        with pytest.raises(RlhfError, match=r"command line: key 'test_size' .* test_fraction"):
            parse_stage_args("dpo", DPO_TYPES, [flag, "0.2"], defaults=dpo_defaults())


def test_held_out_split_keeps_a_prompts_rows_together():
    import datasets

    from rlhf.data import split_train_test

    # 6 prompts with 3 pairs each; a third of the prompts (2) held out with all their pairs.
    rows = [{"prompt": f"p{i}", "chosen": f"c{i}{j}", "rejected": f"r{i}{j}"} for i in range(6) for j in range(3)]
    train, test = split_train_test(datasets.Dataset.from_list(rows), 1 / 3, seed=0)
    assert len(test) == 6 and len(train) == 12
    assert set(test["prompt"]).isdisjoint(train["prompt"]) and len(set(test["prompt"])) == 2
    again, _ = split_train_test(datasets.Dataset.from_list(rows), 1 / 3, seed=0)
    assert again["prompt"] == train["prompt"]  # seeded
    few, none = split_train_test(datasets.Dataset.from_list(rows[:9]), 0.5)  # under 10 rows: no split
    assert none is None and len(few) == 9


# --- a run folder's config.yaml is a config: it loads back as `--config` --------------------------------------

class ConfigWritten(Exception):
    """Raised right after a stage wrote its run folder's config.yaml: the work itself is not needed here."""


@pytest.mark.parametrize("stage, argv", [
    ("sft", ["--train_file", "{labels}/sft/train"]),
    ("reward", ["--train_file", "{labels}/preferences/train"]),
    ("dpo", ["--train_file", "{labels}/preferences/train"]),
    ("rl", ["--reward_model_path", "{reward}", "--prompts_file", "{prompts}"]),
    ("rl", ["--trainer", "rloo", "--reward_model_path", "{reward}", "--prompts_file", "{prompts}"]),
    ("onpolicy", ["--reward_model_path", "{reward}", "--prompts_file", "{prompts}"]),
    ("generate", ["--prompts_file", "{prompts}"]),
    ("eval", ["--policies", "{model}", "--reward_model_path", "{reward}", "--prompts_file", "{prompts}"]),
    ("export", []),
])
def test_a_stage_config_yaml_loads_back_as_its_config(stage, argv, tiny_model, reward_folder, labels_folder,
                                                      tmp_path, monkeypatch):
    """Each stage's config.yaml, passed back as --config, rebuilds the same config (transformers' own values,
    such as include_num_input_tokens_seen 'no' or an AcceleratorConfig, had been written and then refused)."""
    import importlib

    import yaml

    from rlhf import runs

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Say hi."}) + "\n")
    real = runs.prepare_run_dir
    written = []

    def write_then_stop(output_dir, stage_name, config, *args, **kwargs):
        real(output_dir, stage_name, config, *args, **kwargs)
        written.append(config)
        raise ConfigWritten

    monkeypatch.setattr(runs, "prepare_run_dir", write_then_stop)
    main = importlib.import_module(f"rlhf.{stage}").main
    fill = {"labels": labels_folder["path"], "reward": reward_folder, "prompts": str(prompts), "model": tiny_model}
    out = tmp_path / stage
    model = [] if stage == "eval" else ["--model_name_or_path", tiny_model]
    with pytest.raises(ConfigWritten):
        main([*model, *(a.format(**fill) for a in argv), "--output_dir", str(out)])
    dumped = yaml.safe_load((out / "config.yaml").read_text())
    assert dumped == written[0] and dumped["output_dir"] == str(out)
    with pytest.raises(ConfigWritten):
        main(["--config", str(out / "config.yaml")])
    assert written[1] == written[0]
