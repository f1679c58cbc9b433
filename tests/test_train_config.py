"""Config system: recipes, dotted overrides, and errors that name the key before any work is done."""
import pytest

from c2fmae.cli import main as cli_main
from c2fmae.train.cli import build_config
from c2fmae.train.config import ConfigError, config_from_dict, config_to_dict, list_recipes, load_config


def test_default_recipe_is_the_embedded_run():
    cfg = load_config()
    assert cfg.recipe == "default" and cfg.data.source == "synthetic"
    assert cfg.model.inputs == ["rgb", "sem", "ins"] and cfg.model.decoder == "cascade"
    assert cfg.model.encoder_kwargs == dict(img_size=96, patch_size=8, embed_dim=192, depth=6, num_heads=3)
    assert cfg.data.img_size == 96 and cfg.model.num_classes == 10


def test_dotted_overrides_are_typed():
    cfg = load_config("default", ["model.decoder=parallel", "optim.lr=1e-4", "optim.betas=[0.9, 0.99]",
                                  "model.encoder_kwargs.depth=2", "optim.clip_grad=null", "compile=true",
                                  "model.inputs=[rgb]", "model.targets=[rgb]", "model.decoder=pixel", "steps=7"])
    assert cfg.model.decoder == "pixel" and cfg.model.inputs == ["rgb"]
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)         # YAML reads '1e-4' as a string
    assert cfg.optim.betas == (0.9, 0.99) and cfg.optim.clip_grad is None and cfg.compile is True
    assert cfg.model.encoder_kwargs["depth"] == 2 and cfg.model.encoder_kwargs["embed_dim"] == 192  # merged
    assert cfg.steps == 7
    assert load_config("default", ["model.encoder_kwargs={}"]).model.encoder_kwargs == {}  # {} replaces


def test_config_dict_roundtrip():
    cfg = load_config("default", ["optim.betas=[0.8, 0.9]"])
    d = config_to_dict(cfg)
    assert config_from_dict(d) == cfg
    assert isinstance(d["optim"]["betas"], list) and isinstance(d["model"]["encoder_kwargs"], dict)


@pytest.mark.parametrize("override,key", [
    ("optim.lrr=1", "optim.lrr"),                 # unknown nested key
    ("bach_size=8", "bach_size"),                 # unknown top-level key
    ("model.decodr=cascade", "model.decodr"),     # unknown model key
    ("batch_size=abc", "batch_size"),             # wrong type
    ("optim.betas=[0.9]", "optim.betas"),         # wrong length
    ("optim.betas=[0.9, 1.5]", "optim.betas"),    # out of range
    ("precision=fp8", "precision"),
    ("model.decoder=serial", "model.decoder"),    # the model's own validation, re-keyed
    ("data.source=webdataset", "data.source"),    # the data's own validation
    ("data.source=shards", "data.path"),          # shards need a path
    ("accum_steps=5", "accum_steps"),             # 12 % 5
    ("resume=/no/such/run", "resume"),
    ("model.encoder_kwargs=7", "model.encoder_kwargs"),
])
def test_bad_config_names_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config("default", [override])
    assert str(e.value).startswith(key), str(e.value)


def test_recipes_load_with_design_defaults():
    names = list_recipes()
    assert {"default", "c2fmae_vit_small_in1k", "c2fmae_vit_base_in1k", "c2fmae_vit_large_in1k"} <= set(names)
    for size, enc in (("small", "c2fmae_vit_small_patch16_224"), ("base", "c2fmae_vit_base_patch16_224"),
                      ("large", "c2fmae_vit_large_patch16_224")):
        for epochs in (400, 800, 1600):
            cfg = load_config(f"c2fmae_vit_{size}_in1k_{epochs}e", ["data.path=/data/in1k/train-{0..9}.tar"])
            assert cfg.model.encoder == enc and cfg.epochs == epochs and cfg.data.source == "shards"
            assert cfg.batch_size == 4096 and cfg.optim.blr == 1.5e-4 and cfg.optim.betas == (0.9, 0.95)
            assert cfg.optim.weight_decay == 0.05 and cfg.optim.warmup_epochs == 40 and cfg.model.num_classes == 133
            assert cfg.data.img_size == 224 and cfg.data.num_samples == 1281167
    assert load_config("c2fmae_vit_large_in1k", ["data.path=x"]).fsdp is True
    assert load_config("c2fmae_vit_base_in1k", ["data.path=x", "epochs=800"]).epochs == 800


def test_yaml_file_with_base(tmp_path):
    (tmp_path / "base.yaml").write_text("batch_size: 32\noptim:\n  lr: 1.0e-3\n  clip_grad: 3.0\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\noptim:\n  lr: 2.0e-3\n")
    cfg = load_config(str(tmp_path / "child.yaml"), ["steps=3"])
    assert (cfg.batch_size, cfg.optim.lr, cfg.optim.clip_grad, cfg.steps, cfg.recipe) == (32, 2e-3, 3.0, 3, "child")
    (tmp_path / "bad.yaml").write_text("optim:\n  lr: [1\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match="--config"):
        load_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="--config"):
        build_config("no_such_recipe", [])


def test_cli_fails_before_any_work(tmp_path, capsys):
    out = tmp_path / "runs"
    assert cli_main(["pretrain", "optim.lrr=1", f"output_dir={out}"]) == 2
    assert "optim.lrr" in capsys.readouterr().err
    missing = tmp_path / "no_images"
    assert cli_main(["pretrain", "data.source=folder", f"data.path={missing}", f"output_dir={out}",
                     "num_threads=1"]) == 1
    err = capsys.readouterr().err
    assert "data.path" in err and str(missing) in err
    assert not out.exists()  # no run directory was created
    shards = f"{tmp_path}/train-{{000000..000003}}.tar"                     # shards are read lazily: checked now
    assert cli_main(["pretrain", "data.source=shards", f"data.path={shards}", f"output_dir={out}"]) == 1
    err = capsys.readouterr().err
    assert "data.path" in err and "4 of 4 shards" in err and str(tmp_path / "train-000000.tar") in err
    assert not out.exists()
    assert cli_main(["pretrain", "--print-config", "steps=5"]) == 0
    assert "steps: 5" in capsys.readouterr().out
