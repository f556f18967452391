"""The config tree: presets, regex keys, command-line overrides, errors, pickling and saving."""

from __future__ import annotations

import pickle

import pytest
import yaml

from dreamer_tf.config import Config, ConfigError, load_config, parse_overrides, read_presets

# The environments, replay, checkpoints, the loop and the CLI do not depend on the Keras backend.
pytestmark = pytest.mark.backend_independent


def test_defaults_follow_the_official_code():
    config = load_config()
    assert config.agent.dyn.deter == 8192 and config.agent.dyn.classes == 64
    assert config.agent.opt.lr == pytest.approx(4e-5) and config.agent.opt.warmup == 1000
    assert config.agent.loss_scales.rep == pytest.approx(0.1)
    assert config.batch_size == 16 and config.batch_length == 64


def test_presets_stack_in_order():
    config = load_config(["dmc_proprio", "size12m"])
    assert config.agent.dyn.deter == 2048  # size12m overrides dmc_proprio's size1m network
    assert config.task == "dmc_walker_walk" and config.env.dmc.image is False  # dmc_proprio kept
    assert config.run.train_ratio == 1024.0
    reverse = load_config(["size12m", "dmc_proprio"])
    assert reverse.agent.dyn.deter == 512 and reverse.agent.enc.units == 64
    debug = load_config(["size12m", "debug"])
    assert debug.agent.dyn.deter == 8 and debug.batch_size == 4


@pytest.mark.parametrize(
    "preset,units,depth", [("size1m", 64, 4), ("size12m", 256, 16), ("size400m", 1536, 96)]
)
def test_regex_keys_hit_every_leaf(preset, units, depth):
    config = load_config([preset])
    flat = config.flat()
    unit_keys = [k for k in flat if k.startswith("agent.") and k.endswith(".units")]
    assert {k.split(".")[1] for k in unit_keys} == {"enc", "dec", "rewhead", "conhead", "policy", "value"}
    assert all(flat[k] == units for k in unit_keys), {k: flat[k] for k in unit_keys}
    assert all(flat[k] == depth for k in flat if k.startswith("agent.") and k.endswith(".depth"))
    # Regex keys reach only leaves named by the pattern: the bins and hidden sizes stay.
    assert config.agent.value.bins == 255 and isinstance(config.agent.dyn.hidden, int)


def test_regex_key_through_update():
    config = load_config().update({r"agent\..*\.units": 32, r"agent\.(policy|value)\.layers": 5})
    assert config.agent.enc.units == config.agent.value.units == 32
    assert config.agent.policy.layers == config.agent.value.layers == 5
    assert config.agent.enc.layers == 3


def test_command_line_overrides_convert_types():
    config = load_config(
        ["debug"],
        ["--run.steps", "1e5", "--replay.chunk", "2e3", "--compile.jit", "false", "--env.dummy.size", "32,48",
         "--agent.opt.lr=3e-4", "--task", "dmc_cheetah_run", "--agent.enc.mults", "1,2"],
    )  # fmt: skip
    assert config.run.steps == 1e5 and isinstance(config.run.steps, float)
    assert config.replay.chunk == 2000 and isinstance(config.replay.chunk, int)
    assert config.compile.jit is False
    assert config.env.dummy.size == (32, 48) and all(isinstance(x, int) for x in config.env.dummy.size)
    assert config.agent.opt.lr == pytest.approx(3e-4)
    assert config.task == "dmc_cheetah_run"
    assert config.agent.enc.mults == (1, 2)
    assert load_config([], ["--compile.jit", "True"]).compile.jit is True


def test_renamed_keys_still_work_as_flags_and_in_saved_configs(tmp_path, capsys):
    # The compile options moved from the top level and agent.unroll into compile.*: old flags and
    # the config.yaml of a run started before the move still load, under the new names.
    config = load_config([], ["--agent.unroll", "true", "--precision", "float32", "--jit", "false"])
    assert (config.compile.unroll, config.compile.precision, config.compile.jit) == (True, "float32", False)
    assert "--agent.unroll is now --compile.unroll" in capsys.readouterr().err
    old = load_config().to_dict()
    compile_options = old.pop("compile")
    old.update(jit=compile_options["jit"], xla=True, precision="bfloat16")
    old["agent"]["unroll"] = True
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    saved = Config.load(tmp_path / "config.yaml")
    assert (
        saved.compile.xla is True and saved.compile.unroll is True and saved.compile.precision == "bfloat16"
    )
    # compile.devices and compile.cache came after the move: an old file lacks them, and a resume
    # takes their defaults.
    assert "unroll" not in saved.agent.to_dict()
    assert set(saved.flat()) == set(load_config().flat()) - {"compile.devices", "compile.cache"}


def test_bad_values_raise():
    with pytest.raises(ConfigError, match="replay.chunk"):
        load_config([], ["--replay.chunk", "1.5"])
    with pytest.raises(ConfigError, match="jit"):
        load_config([], ["--compile.jit", "maybe"])
    with pytest.raises(ConfigError, match="agent.opt.lr"):
        load_config([], ["--agent.opt.lr", "fast"])
    with pytest.raises(ConfigError, match="needs a value"):
        parse_overrides(["--run.steps"])
    with pytest.raises(ConfigError, match="Expected an option"):
        parse_overrides(["run.steps", "3"])


def test_unknown_key_names_it_and_suggests_close_matches():
    with pytest.raises(ConfigError) as error:
        load_config([], ["--agent.opt.lrr", "1e-3"])
    message = str(error.value)
    assert "'agent.opt.lrr'" in message and "agent.opt.lr" in message
    with pytest.raises(ConfigError) as error:
        load_config([], ["--agent.dyn.detr", "5"])
    assert "agent.dyn.detr" in str(error.value) and "agent.dyn.deter" in str(error.value)
    with pytest.raises(ConfigError, match="nothing_like_this"):
        load_config().update({r"nothing_like_this\..*": 1})
    with pytest.raises(AttributeError, match="batch_size"):
        load_config().batch_sise  # noqa: B018


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError) as error:
        load_config(["size13m"])
    message = str(error.value)
    assert "size13m" in message
    for name in read_presets():
        if name != "defaults":
            assert name in message, name
    assert "size12m" in message.split("Presets:")[0]  # suggested as the closest
    with pytest.raises(ConfigError):
        load_config(["defaults"])


def test_all_presets_load():
    for name in read_presets():
        if name != "defaults":
            assert isinstance(load_config([name]), Config), name


def test_config_is_immutable_and_update_copies():
    config = load_config()
    with pytest.raises(AttributeError):
        config.seed = 3
    updated = config.update({"seed": 3})
    assert updated.seed == 3 and config.seed == 0
    assert config["agent.dyn.deter"] == config.agent.dyn.deter
    assert "agent.dyn.deter" in config and "agent.dyn.nope" not in config


def test_pickle_round_trip():
    config = load_config(["debug", "abl_adam"], ["--seed", "7"])
    restored = pickle.loads(pickle.dumps(config))
    assert restored == config and isinstance(restored, Config)
    assert restored.agent.opt.optimizer == "adam" and restored.seed == 7
    assert restored.agent.enc.mults == config.agent.enc.mults


def test_save_load_round_trip(tmp_path):
    config = load_config(["size12m", "debug"], ["--run.steps", "1e5", "--env.dummy.size", "32,32"])
    path = tmp_path / "config.yaml"
    config.save(path)
    restored = Config.load(path)
    assert restored == config
    assert restored.flat() == config.flat()
    assert isinstance(restored.run.steps, float) and isinstance(restored.agent.dyn.deter, int)
    assert restored.agent.opt.lr == pytest.approx(4e-5)
    assert restored.env.dummy.size == (32, 32)


def test_resume_accepts_a_model_key_added_to_the_defaults_at_its_default_value():
    from dreamer_tf.config import Config
    from dreamer_tf.run.train import ConfigMismatchError, check_resume_config

    config = load_config(["small"], ["--task", "bsuite_catch/0"])
    tree = config.to_dict()
    del tree["agent"]["opt"]["actor"]  # a run begun before agent.opt.actor existed
    saved = Config(tree)
    changes = check_resume_config(config, saved)
    assert changes == ["agent.opt.actor: '<missing>' -> 1.0 (added to the defaults since)"]
    with pytest.raises(ConfigMismatchError, match="agent.opt.actor"):  # at another value it is a new model
        check_resume_config(config.update({"agent.opt.actor": 0.5}), saved)


def test_compile_options_never_block_a_resume():
    from dreamer_tf.run.train import ConfigMismatchError, check_resume_config

    saved = load_config(["debug"], ["--task", "dummy_disc"])
    changed = saved.update({"compile.unroll": True, "compile.jit": False, "compile.precision": "bfloat16"})
    changes = check_resume_config(changed, saved)
    assert sorted(line.split(":")[0] for line in changes) == [
        "compile.jit",
        "compile.precision",
        "compile.unroll",
    ]
    with pytest.raises(ConfigMismatchError, match="agent.dyn.deter"):
        check_resume_config(saved.update({"agent.dyn.deter": 16}), saved)
