"""Config validation: every error names the field and what is allowed; dotted paths, overrides and YAML loading."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from spfde_search.config import (
    Config,
    ConfigError,
    apply_overrides,
    field_info,
    field_paths,
    flatten,
    load_config,
    parse_overrides,
    parse_value,
    unflatten,
)
from spfde_search.config_export import config_to_yaml


def error_of(data: dict) -> str:
    with pytest.raises(ConfigError) as e:
        Config.parse(data)
    return str(e.value)


# ---------------------------------------------------------------- defaults follow docs/method.md


def test_defaults_are_the_papers_choices() -> None:
    cfg = Config()
    assert cfg.sparsity.algorithm == "mest" and cfg.sparsity.ratio == 0.9
    assert cfg.sparsity.distribution == "uniform" and cfg.sparsity.dense_first
    assert cfg.sparsity.soft_bound == [(0.5625, 0.02), (0.75, 0.01)]  # MEST README, 90% sparsity
    assert cfg.freezing.scheme == "single_shot" and math.isclose(cfg.freezing.freeze_fraction, 2 / 3)
    assert not cfg.freezing.enabled and not cfg.sieving.enabled
    assert cfg.train.update_interval == 5 and cfg.train.momentum == 0.9


@pytest.mark.parametrize(
    ("algorithm", "decay"), [("rigl", "cosine"), ("mest", "constant"), ("set", "constant")]
)
def test_drop_decay_auto(algorithm: str, decay: str) -> None:
    assert Config.parse({"sparsity": {"algorithm": algorithm}}).sparsity.decay() == decay
    forced = Config.parse({"sparsity": {"algorithm": algorithm, "drop_decay": "constant"}})
    assert forced.sparsity.decay() == "constant"


# ---------------------------------------------------------------- validation messages


def test_out_of_range_names_field_and_range() -> None:
    msg = error_of({"sparsity": {"ratio": 1.5}})
    assert "sparsity.ratio" in msg
    assert "[0, 1)" in msg  # ge=0, lt=1 written as a half-open interval


def test_integer_range_message() -> None:
    msg = error_of({"train": {"epochs": 0}})
    assert "train.epochs" in msg and "an integer in [1, 10000]" in msg


def test_sieving_window_is_validated() -> None:
    """docs/method.md §4: the forgetting window W is a config option (None or 0 = max(delta tau, 3))."""
    assert Config.parse({}).sieving.window is None
    assert Config.parse({"sieving": {"window": 4}}).sieving.window == 4
    for bad in (-1, 10_001, "three"):
        msg = error_of({"sieving": {"window": bad}})
        assert "sieving.window" in msg and "an integer in [0, 10000] or null" in msg


def test_unknown_top_level_key_lists_sections() -> None:
    msg = error_of({"foo": {"bar": 1}})
    assert "foo: unknown key" in msg
    for section in ("model", "data", "train", "sparsity", "freezing", "sieving"):
        assert section in msg


def test_unknown_nested_key_lists_section_fields() -> None:
    msg = error_of({"sparsity": {"rato": 0.9}})
    assert "sparsity.rato: unknown key; did you mean 'sparsity.ratio'?" in msg  # the closest key, not all
    msg = error_of({"sparsity": {"qqqq": 0.9}})  # nothing close: the keys of that section
    assert "sparsity.qqqq: unknown key" in msg
    assert "sparsity.ratio" in msg and "sparsity.algorithm" in msg
    assert "train.lr" not in msg  # only the keys of that section


def test_categorical_lists_choices() -> None:
    msg = error_of({"sparsity": {"algorithm": "gmp"}})
    assert "sparsity.algorithm" in msg
    for name in ("mest", "rigl", "set", "static", "dense"):
        assert repr(name) in msg


def test_unknown_model_lists_valid_names() -> None:
    msg = error_of({"model": {"name": "resnet9"}})  # 9 - 2 is not a multiple of 6
    assert "model.name" in msg and "resnet9" in msg and "resnet32" in msg and "resnet50" in msg
    assert "import path 'module:callable'" in msg


def test_data_name_is_a_registered_name_or_an_import_path() -> None:
    assert Config.parse({"data": {"name": "mypkg.data:load", "kwargs": {"n": 3}}}).data.kwargs == {"n": 3}
    msg = error_of({"data": {"name": "fashion-mnist"}})
    assert "data.name" in msg and "fashion_mnist" in msg and "module:callable" in msg


def test_a_model_registered_on_import_is_a_valid_name() -> None:
    """A package that registers its model in MODELS (timm's register_model) is found the same way."""
    from spfde_search.models import MODELS

    assert "model.name" in error_of({"model": {"name": "tiny_registered_for_test"}})
    MODELS.add("tiny_registered_for_test", lambda num_classes=10: None)
    try:
        assert Config.parse({"model": {"name": "tiny_registered_for_test"}}).model.name == "tiny_registered_for_test"
    finally:
        MODELS._entries.pop("tiny_registered_for_test")


@pytest.mark.parametrize("name", ["resnet8", "resnet14", "resnet20", "resnet32", "resnet56", "resnet110", "resnet18",
                                  "resnet34", "resnet50", "mypkg.nets:build_net", "torchvision.models:mobilenet_v2"])
def test_valid_model_names(name: str) -> None:
    assert Config.parse({"model": {"name": name}}).model.name == name


@pytest.mark.parametrize("name", ["resnet2", "resnet7", "vgg16", "resnet", "mypkg.nets", "mypkg:", "my-pkg:f", ":f"])
def test_invalid_model_names(name: str) -> None:
    assert "model.name" in error_of({"model": {"name": name}})


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        ({"train": {"lr": 0.1, "lr_min": 0.2}}, ["train.lr_min", "train.lr"]),
        ({"train": {"epochs": 3, "warmup_epochs": 3}}, ["train.warmup_epochs", "train.epochs"]),
        ({"sparsity": {"algorithm": "dense"}}, ["sparsity.ratio", "dense", "sparsity.ratio=0"]),
        (
            {"freezing": {"target_flops_reduction": 0.2, "start_epoch": 3}},
            ["freezing.target_flops_reduction", "freezing.start_epoch"],
        ),
        ({"freezing": {"units": 2}}, ["freezing.units", "freezing.start_epoch"]),
        ({"sparsity": {"soft_bound": [[0.5, 0.02], [0.4, 0.01]]}}, ["soft_bound", "increasing"]),
        ({"sparsity": {"soft_bound": [[0.5, 1.5]]}}, ["soft_bound", "[0, 1)"]),
        ({"sieving": {"fraction": 1.0}}, ["sieving.fraction", "[0, 1)"]),
        ({"freezing": {"target_flops_reduction": -0.1}}, ["freezing.target_flops_reduction"]),
    ],
)
def test_cross_field_messages(data: dict, needles: list[str]) -> None:
    msg = error_of(data)
    assert msg.startswith("invalid config:")
    for n in needles:
        assert n in msg, (n, msg)


def test_every_problem_on_its_own_line() -> None:
    msg = error_of({"sparsity": {"ratio": 2.0}, "train": {"epochs": 0}})
    lines = msg.splitlines()
    assert lines[0] == "invalid config:"
    assert any("sparsity.ratio" in ln for ln in lines[1:]) and any("train.epochs" in ln for ln in lines[1:])
    assert len(lines) == 3


def test_dense_with_zero_ratio_is_fine() -> None:
    assert Config.parse({"sparsity": {"algorithm": "dense", "ratio": 0}}).sparsity.algorithm == "dense"


# ---------------------------------------------------------------- field_info


def test_field_info_bounds() -> None:
    r = field_info("sparsity.ratio")
    assert (r.kind, r.low, r.high, r.low_inclusive, r.high_inclusive) == ("float", 0.0, 1.0, True, False)
    assert r.contains(0.0) and r.contains(0.95) and not r.contains(1.0) and not r.contains(-0.01)
    assert not r.contains(True)  # a bool is not a number here
    e = field_info("train.epochs")
    assert (e.kind, e.low, e.high) == ("int", 1.0, 10000.0)
    lr = field_info("train.lr")
    assert lr.low == 0 and not lr.low_inclusive and not lr.contains(0.0) and lr.contains(10.0)
    a = field_info("sparsity.algorithm")
    assert a.kind == "categorical" and set(a.choices or ()) == {"mest", "rigl", "set", "static", "dense"}
    assert field_info("train.nesterov").choices == (False, True)
    s = field_info("freezing.start_epoch")
    assert s.optional and s.kind == "int" and s.low == 0 and s.high is None


def test_field_info_unknown_path_lists_valid() -> None:
    with pytest.raises(KeyError, match="sieving.fraction"):
        field_info("sieving.frac")


def test_field_paths_cover_every_section_field() -> None:
    paths = field_paths()
    assert "seed" in paths and "sparsity.ratio" in paths and "freezing.target_flops_reduction" in paths
    for p in paths:
        field_info(p)  # every listed path resolves
    assert len(paths) == len(set(paths))


# ---------------------------------------------------------------- overrides and YAML


def test_parse_overrides_yaml_scalars() -> None:
    got = parse_overrides(["sparsity.ratio=0.95", "train.epochs=3", "data.augment=false", "data.root=", "model.name=resnet20"])
    assert got == {"sparsity.ratio": 0.95, "train.epochs": 3, "data.augment": False, "data.root": None, "model.name": "resnet20"}
    assert isinstance(got["train.epochs"], int)


def test_parse_overrides_needs_equals() -> None:
    with pytest.raises(ConfigError, match="path=value"):
        parse_overrides(["sparsity.ratio"])


def test_apply_overrides_unknown_path() -> None:
    with pytest.raises(ConfigError, match="unknown config path 'foo.bar'; sections: model, data, train, sparsity"):
        apply_overrides({}, {"foo.bar": 1})


@pytest.mark.parametrize("typo, hint", [
    ("sparsity.ration", "did you mean 'sparsity.ratio'?"),
    ("sieve.fraction", "did you mean 'sieving.fraction'?"),  # a wrong section, a right key
    ("ratio", "did you mean 'sparsity.ratio'?"),  # the key alone
    ("train.epoch", "did you mean 'train.epochs'?"),
    ("freezing.target", "did you mean 'freezing.target_flops_reduction'?"),  # cut short
    ("sparsity.zzzzz", "keys of sparsity: sparsity.algorithm, sparsity.ratio,"),  # nothing close: its section
])
def test_a_typo_gets_the_closest_paths_not_all_of_them(typo: str, hint: str) -> None:
    """Issue 33 item 9: the closest names (difflib), instead of every one of the config's paths."""
    with pytest.raises(ConfigError) as e:
        apply_overrides({}, {typo: 1})
    msg = str(e.value)
    assert msg.startswith(f"unknown config path {typo!r}; {hint}"), msg
    assert "data.root" not in msg  # not the list of every path


def test_an_unknown_key_in_a_config_file_gets_the_closest_one() -> None:
    with pytest.raises(ConfigError, match=r"sparsity.ration: unknown key; did you mean 'sparsity.ratio'\?"):
        Config.parse({"sparsity": {"ration": 0.9}})


def test_apply_overrides_does_not_mutate() -> None:
    base = {"sparsity": {"ratio": 0.9}}
    out = apply_overrides(base, {"sparsity.ratio": 0.8, "train.epochs": 2})
    assert base == {"sparsity": {"ratio": 0.9}}
    assert out == {"sparsity": {"ratio": 0.8}, "train": {"epochs": 2}}


def test_with_overrides_revalidates() -> None:
    cfg = Config()
    assert cfg.with_overrides({"sparsity.ratio": 0.5}).sparsity.ratio == 0.5
    with pytest.raises(ConfigError, match="sparsity.ratio"):
        cfg.with_overrides({"sparsity.ratio": 1.5})


def test_flatten_unflatten_roundtrip() -> None:
    d = Config().to_dict()
    flat = flatten(d)
    assert flat["sparsity.ratio"] == 0.9 and "sparsity" not in flat
    assert unflatten(flat) == d
    assert set(flat) == set(field_paths())  # the flat config's keys are exactly the dotted paths


def test_yaml_roundtrip(tmp_path: Path) -> None:
    cfg = Config.parse({"sparsity": {"ratio": 0.8, "algorithm": "rigl"}, "sieving": {"fraction": 0.25}})
    p = tmp_path / "c.yaml"
    p.write_text(config_to_yaml(cfg, header="exported\nby a test"))
    assert p.read_text().startswith("# exported\n# by a test\n")
    assert load_config(p) == cfg


def test_load_config_layers_overrides(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("sparsity: {ratio: 0.8}\ntrain: {epochs: 7}\n")
    cfg = load_config(p, {"sparsity.ratio": 0.5})
    assert cfg.sparsity.ratio == 0.5 and cfg.train.epochs == 7


def test_load_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sparsity: {ratio: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(lst)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == Config()


def test_shipped_configs_load(trainer_repo: Path) -> None:
    paper = load_config(trainer_repo / "configs" / "paper_resnet32_cifar100.yaml")
    assert (paper.model.name, paper.model.width, paper.data.name, paper.train.epochs) == ("resnet32", 2, "cifar100", 160)
    assert paper.freezing.target_flops_reduction == 0.2 and paper.sieving.fraction == 0.2
    fm = load_config(trainer_repo / "configs" / "spfde_fmnist_cpu.yaml")
    assert fm.data.name == "fashion_mnist" and fm.sparsity.algorithm == "mest"
    load_config(trainer_repo / "spfde_search" / "presets" / "quickstart.yaml")


def test_hint_only_where_there_is_a_range() -> None:
    # a bounded or categorical field states its range; a free-form one (model.name) does not get an empty
    # "(allowed: a string)" tacked on, nor a list field whose own validator says what is wrong
    assert "(allowed: a number in [0, 1))" in error_of({"sparsity": {"ratio": 2}})
    assert "(allowed: true or false (also on/off, yes/no))" in error_of({"data": {"augment": "maybe"}})
    assert "(allowed: an integer in [0, inf) or null)" in error_of({"freezing": {"start_epoch": -1}})
    assert "(allowed: a" not in error_of({"model": {"name": "resnet9"}})
    assert "(allowed: a" not in error_of({"sparsity": {"soft_bound": [[0.5, 0.02], [0.4, 0.01]]}})


# ---------------------------------------------------------------- nan / inf, list fields, YAML booleans

FLOAT_PATHS = [p for p in field_paths() if field_info(p).kind == "float"]


@pytest.mark.parametrize("path", FLOAT_PATHS)
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", ".nan"])
def test_every_float_field_refuses_non_finite(path: str, bad: str) -> None:
    with pytest.raises(ConfigError, match=rf"{path}: must be a finite number") as e:
        load_config(None, parse_overrides([f"{path}={bad}"]))
    assert "less than" not in str(e.value) and "greater than" not in str(e.value)


def test_non_finite_inside_a_list_field() -> None:
    msg = error_of({"sparsity": {"soft_bound": [[float("nan"), 0.01]]}})
    assert "sparsity.soft_bound[0][0]: must be a finite number" in msg


def test_list_field_message_names_its_type() -> None:
    msg = error_of({"sparsity": {"soft_bound": 0.5}})
    assert "sparsity.soft_bound: Input should be a valid list (allowed: a list of [number, number] pairs)" in msg
    assert "sparsity.soft_bound[0][1]: Field required" in error_of({"sparsity": {"soft_bound": [[0.5]]}})


def test_no_field_describes_itself_as_other() -> None:
    for path in field_paths():
        text = field_info(path).describe()
        assert "other" not in text and not text.startswith("a a"), (path, text)


WORDS = ["on", "off", "yes", "no", "y", "n", "true", "false", "On", "OFF", "Yes", "NO", "True", "FALSE"]


@pytest.mark.parametrize("word", WORDS)
def test_string_field_keeps_boolean_words_from_set(word: str) -> None:
    assert parse_overrides([f"data.root={word}"]) == {"data.root": word}
    assert load_config(None, parse_overrides([f"data.root={word}"])).data.root == word


@pytest.mark.parametrize("word", ["on", "off"])
def test_channels_last_off_from_set_and_file(tmp_path: Path, word: str) -> None:
    assert load_config(None, parse_overrides([f"train.channels_last={word}"])).train.channels_last == word
    f = tmp_path / "c.yaml"
    f.write_text(f"train:\n  channels_last: {word}\n")
    assert load_config(f).train.channels_last == word


@pytest.mark.parametrize(("word", "value"), [("true", True), ("false", False), ("on", True), ("off", False),
                                             ("yes", True), ("no", False), ("True", True), ("OFF", False)])
def test_bool_fields_still_take_boolean_words(tmp_path: Path, word: str, value: bool) -> None:
    assert parse_overrides([f"data.augment={word}"]) == {"data.augment": value}
    f = tmp_path / "c.yaml"
    f.write_text(f"data:\n  augment: {word}\nsparsity:\n  dense_first: {word}\n")
    cfg = load_config(f)
    assert cfg.data.augment is value and cfg.sparsity.dense_first is value


def test_numeric_field_does_not_take_a_boolean_word() -> None:
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(None, parse_overrides(["train.lr=yes"]))


def test_exported_yaml_round_trips_boolean_words(tmp_path: Path) -> None:
    cfg = load_config(None, parse_overrides(["train.channels_last=off", "data.root=no", "data.augment=off"]))
    f = tmp_path / "exported.yaml"
    f.write_text(config_to_yaml(cfg, header="exported"))
    assert load_config(f) == cfg
    assert load_config(f).train.channels_last == "off" and load_config(f).data.root == "no"


def test_parse_value_reads_mlflow_params_per_field() -> None:
    """MLflow keeps params as str(value): 'off' for a string field, 'True' for a bool field."""
    assert parse_value("train.channels_last", "off") == "off"
    assert parse_value("data.augment", "True") is True
    assert parse_value("sparsity.ratio", "0.9") == 0.9
    assert parse_value("sparsity.soft_bound", "[[0.5, 0.02]]") == [[0.5, 0.02]]


def test_yaml_leaves_out_what_does_nothing_for_its_data_set_and_still_round_trips() -> None:
    """Issue 33 item 8: an exported config holds what matters. For Fashion-MNIST the synthetic set's sizes and the
    imagefolder crop / workers do nothing: left out at their defaults, named inert where someone set them; either
    way `spfde train --config` of the file rebuilds exactly the same config."""
    from spfde_search.config import read_yaml
    from spfde_search.config_export import inert_paths

    cfg = Config()
    text = config_to_yaml(cfg, header="source: test")
    body = read_yaml(text)
    assert "synthetic_train" not in body["data"] and "image_size" not in body["data"] and "num_workers" not in body["data"]
    assert text.startswith("# source: test\n# left out, inert for data set 'fashion_mnist' (defaults): data.synthetic_*")
    assert Config.parse(body) == cfg
    set_ = cfg.with_overrides({"data.image_size": 64})
    text = config_to_yaml(set_)
    assert read_yaml(text)["data"]["image_size"] == 64 and "kept as set, they change nothing): data.image_size" in text
    assert Config.parse(read_yaml(text)) == set_
    synthetic = cfg.with_overrides({"data.name": "synthetic", "data.synthetic_size": 32})
    assert "data.synthetic_size" not in inert_paths(synthetic) and "data.image_size" in inert_paths(synthetic)
    assert read_yaml(config_to_yaml(synthetic))["data"]["synthetic_size"] == 32
    folder = cfg.with_overrides({"data.name": "imagefolder", "data.root": "/x"})
    assert "data.image_size" not in inert_paths(folder) and "data.num_workers" not in inert_paths(folder)
