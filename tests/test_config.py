import pytest

from jaxgan import cli
from jaxgan.config import Config, ConfigError, ModelConfig, flat_fields, to_dict
from jaxgan.models import ARCHITECTURES, DCGANConfig, DFGANConfig
from jaxgan.presets import PRESETS, from_dict, get_config


def test_presets_override_a_few_fields():
    assert get_config() == Config(model=DCGANConfig())
    tiny = get_config("tiny")
    assert tiny.model.width == 8 and tiny.model.resolution == 32
    assert get_config("dcgan256").model.resolution == 256
    assert set(PRESETS) >= {"default", "tiny", "shapes64", "dcgan64", "dcgan128", "dcgan256"}


def test_dfgan64_cpu_is_the_studys_command_as_a_preset():
    # docs/experiments/2026-11-29-closing-the-gap.md: the run reported there is dfgan64 with these overrides.
    study = get_config("dfgan64", ["model.width=8", "model.g_norm=batch", "model.g_shortcut=bilinear",
                                    "train.g_lr=4e-4", "train.d_lr=8e-4", "train.batch_size=16",
                                    "train.penalty_every=4", "train.ema_decay=0.995"])
    assert get_config("dfgan64_cpu") == study
    # docs/experiments/2026-11-30-word-attention-two-seeds.md: the word-attention runs are that preset plus
    # one override.
    assert get_config("dfgan64_cpu_attn") == get_config("dfgan64_cpu", ["model.word_attention=16"])
    assert get_config("dfgan64_cpu_attn").model.word_attention != get_config("dfgan64_cpu").model.word_attention
    for name in PRESETS:  # and every preset is a valid config
        get_config(name)


def test_overrides_are_typed():
    c = get_config("default", ["train.steps=12", "model.bn_sync=false", "train.g_lr=1e-3",
                               "model.dtype=bfloat16"])
    assert c.train.steps == 12 and c.model.bn_sync is False and c.train.g_lr == 1e-3
    assert c.model.dtype == "bfloat16"
    assert from_dict(to_dict(c)) == c


@pytest.mark.parametrize("overrides, message", [
    (["model.resolution=48"], "power of two"),
    (["model.resolution=512"], "model.resolution must be one of"),
    (["model.wdth=3"], "unknown config key 'model.wdth'; valid keys: data.captions_dir, data.data_dir, data.dataset"),
    (["train.steps=ten"], "train.steps: 'ten' is not a valid int"),
    (["train.loss=wgan"], "train.loss must be one of nonsaturating, hinge"),
    (["train.batch_size=0"], "train.batch_size must be positive"),
    (["model.width"], "not of the form key=value"),
    (["model.g_norm=layer", "model.arch=dfgan"], "model.g_norm must be one of none, batch"),
    (["model.g_norm=batch"],
     "model.g_norm, model.g_shortcut, model.d_head_width, model.d_projection and model.init need model.arch=dfgan"),
    (["model.d_width=-8"], "model.d_width must not be negative, got -8"),
    (["model.g_shortcut=bilinear"],
     "model.g_norm, model.g_shortcut, model.d_head_width, model.d_projection and model.init need model.arch=dfgan"),
    (["model.d_projection=true"], "model.d_projection and model.init need model.arch=dfgan"),
    (["model.d_head_width=-1", "model.arch=dfgan"], "model.d_head_width must not be negative, got -1"),
    (["model.g_shortcut=bicubic", "model.arch=dfgan"], "model.g_shortcut must be one of nearest, bilinear"),
])
def test_bad_config_gives_one_line_error(overrides, message):
    with pytest.raises(ConfigError) as e:
        get_config("default", overrides)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ConfigError, match="unknown preset 'huge'; valid presets: default, "):
        get_config("huge")


def test_each_architecture_has_its_own_config_class_registered_by_name():
    for name, arch in ARCHITECTURES.items():
        assert arch.config.arch == name and issubclass(arch.config, ModelConfig)
    assert type(get_config().model) is DCGANConfig and type(get_config("dfgan64").model) is DFGANConfig
    assert not hasattr(get_config().model, "g_norm") and not hasattr(get_config("dfgan64").model, "upsample")


def test_setting_model_arch_switches_the_config_class_and_keeps_the_shared_fields():
    # model.arch resolves first wherever it stands, so the other arch's keys may come before it.
    for overrides in (["model.arch=dfgan", "model.g_norm=batch"], ["model.g_norm=batch", "model.arch=dfgan"]):
        model = get_config("tiny", overrides).model
        assert type(model) is DFGANConfig and (model.width, model.z_dim, model.g_norm) == (8, 16, "batch")
    back = get_config("dfgan64", ["model.arch=dcgan"]).model
    assert type(back) is DCGANConfig and back.resolution == 64
    # Another architecture's key at its default is accepted (old configs hold every key).
    assert get_config("default", ["model.g_norm=none", "model.d_projection=false"]) == get_config()
    with pytest.raises(ConfigError, match="model.arch must be one of dcgan, dfgan, r3gan, galip, got 'gan'"):
        get_config("default", ["model.arch=gan"])
    with pytest.raises(ConfigError, match="model.upsample='conv_transpose' is not a dfgan option: "
                                          "model.upsample needs model.arch=dcgan"):
        get_config("dfgan64", ["model.upsample=conv_transpose"])
    with pytest.raises(ConfigError, match="model.g_norm='batch' is not a dcgan option"):
        get_config("dfgan64_cpu", ["model.arch=dcgan"])  # would silently drop the preset's g_norm


def test_help_config_lists_every_key_with_its_type_default_and_meaning(capsys):
    assert cli.train_main(["--help-config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    keys = set(flat_fields(get_config())) | {f"model.{f.name}" for a in ARCHITECTURES.values()
                                             for f in a.config.own_fields()}
    rows = {line.split()[0]: line.split(maxsplit=3)[1:] for line in lines if line.startswith("  ")}
    assert set(rows) == keys
    for key, (kind, _default, meaning) in rows.items():
        assert kind in ("int", "float", "str", "bool") and meaning.strip(), key
    assert rows["train.steps"][:2] == ["int", "6000"] and rows["model.g_norm"][:2] == ["str", '"none"']
    assert "one of: none, batch" in rows["model.g_norm"][2]
    assert "model, dfgan only (model.arch=dfgan):" in lines and "model, dcgan only (model.arch=dcgan):" in lines
