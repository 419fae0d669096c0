"""The experiment configs: every option of every group composes and becomes the schema dataclasses; an
override of each schema field type works (the frozen QuantSpec and Datapath too); unknown keys and wrong
types fail at composition with Hydra's message; the datapath options are the presets themselves."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from experiments.schema import CONFIG_DIR, compose_config, to_objects
from quant.contract.datapath import PRESETS, Datapath
from quant.contract.spec import QuantSpec

GROUPS = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS if g != "experiment" for o in options(g)])
def test_every_group_option_composes_and_instantiates(group: str, option: str) -> None:
    cfg = compose_config([f"{group}={option}"])
    run = to_objects(cfg)
    assert getattr(run, group) is not None
    if group == "datapath":
        assert run.datapath == PRESETS[option]
    if group == "scheme" and run.scheme.weight is not None:
        assert isinstance(run.scheme.weight, QuantSpec) and isinstance(run.scheme.input, QuantSpec)


@pytest.mark.parametrize("bundle", options("experiment"))
def test_every_experiment_bundle_composes(bundle: str) -> None:
    to_objects(compose_config([f"+experiment={bundle}"]))


def test_every_preset_has_its_option() -> None:
    assert options("datapath") == sorted(PRESETS)


@pytest.mark.parametrize(("override", "path", "value"), [
    ("scheme.weight.bits=4", ("scheme", "weight", "bits"), 4),                 # int inside a frozen QuantSpec
    ("scheme.input.symmetric=true", ("scheme", "input", "symmetric"), True),   # bool
    ("scheme.weight.granularity=tensor", ("scheme", "weight", "granularity"), "tensor"),  # str
    ("scheme.weight.group_size=16", ("scheme", "weight", "group_size"), 16),    # Optional[int]
    ("datapath.acc_bits=16", ("datapath", "acc_bits"), 16),                    # the frozen Datapath
    ("datapath.overflow=saturate", ("datapath", "overflow"), "saturate"),
    ("method.lr=0.01", ("method", "lr"), 0.01),                                # float
    ("+method.observer_kwargs.percentile=99.0", ("method", "observer_kwargs", "percentile"), 99.0),  # dict
    ("data.subset=100", ("data", "subset"), 100),
    ("scheme.first_last_bits=8", ("scheme", "first_last_bits"), 8),
    ("train.epochs=2", ("train", "epochs"), 2),
    ("seed=3", ("seed",), 3),
])  # fmt: skip
def test_an_override_of_each_field_type_works(override: str, path: tuple[str, ...], value: object) -> None:
    node = compose_config([override])
    for key in path:
        node = node[key]
    assert node == value


def test_overrides_reach_the_dataclasses_and_are_validated() -> None:
    run = to_objects(compose_config(["scheme=w4a4", "scheme.weight.bits=3", "datapath=w4a4_acc16_sat",
                                     "datapath.acc_bits=20"]))  # fmt: skip
    assert run.scheme.weight == QuantSpec(bits=3, granularity="channel", axis=0)
    assert run.datapath == Datapath.preset("w4a4_acc16_sat").with_(acc_bits=20)
    with pytest.raises(ValueError, match="granularity"):
        to_objects(compose_config(["scheme.weight.granularity=diagonal"]))


@pytest.mark.parametrize(("override", "error", "message"), [
    ("scheme.weight.bitz=4", ConfigCompositionException, "Could not override 'scheme.weight.bitz'"),
    ("datapath.acc_bits=sixteen", ConfigCompositionException, "Error merging override datapath.acc_bits=sixteen"),
    ("nosuch=1", ConfigCompositionException, "Could not override 'nosuch'"),
    ("scheme=w9a9", MissingConfigException, "Could not find 'scheme/w9a9'"),
])  # fmt: skip
def test_unknown_keys_and_wrong_types_fail_at_composition(override: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        compose_config([override])


def test_the_default_config() -> None:
    run = to_objects(compose_config())
    assert (run.data.name, run.model.name, run.scheme.name, run.method.name, run.datapath.name) == (
        "digits", "cnn", "w8a8", "ptq_minmax", "fbgemm_int8")  # fmt: skip
    assert Path(run.cache_dir).is_absolute()


@pytest.mark.parametrize(("override", "target"), [
    ("hydra/launcher=local_parallel", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
    ("hydra/launcher=slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
    ("hydra/launcher=ray", "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"),
    ("hydra/sweeper=bits_search", "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"),
])  # fmt: skip
def test_the_launchers_and_the_sweeper_compose(override: str, target: str) -> None:
    """A user with a cluster changes one override; the Ray plugin itself is optional (its config composes)."""
    from hydra import compose, initialize_config_dir

    from experiments.schema import register

    register()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("run", overrides=[override, "hydra.launcher.n_jobs=2"] if "joblib" in target else [override],
                      return_hydra_config=True)  # fmt: skip
    node = cfg.hydra.sweeper if "sweeper" in override else cfg.hydra.launcher
    assert node["_target_"] == target
    if "sweeper" in override:
        assert set(node.params) == {"scheme.weight.bits", "scheme.input.bits", "scheme.first_last_bits"}
