import json
from dataclasses import fields

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

import erav1.main
from erav1.errors import RunDirError, UsageError
from erav1.main import Config, fit
from erav1.models import ResNet18
from erav1.utils import rundir
from erav1.utils.data import load_data
from erav1.utils.policies import Runtime
from tests.conftest import tiny_config

TIMING = {"seconds", "train_seconds", "images_per_s"}


def without_timing(history):
    return [{k: v for k, v in record.items() if k not in TIMING} for record in history]


def test_short_real_run_learns_and_writes_every_run_file(tiny_run):
    history = tiny_run.history
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.2
    assert tiny_run.final["test_acc"] > 0.2  # chance is 0.10 on these 500 real test images
    run_dir = tiny_run.run_dir
    for name in rundir.RUN_FILES:
        assert (run_dir / name).is_file(), name
    assert list((run_dir / rundir.TENSORBOARD).glob("events.out.tfevents.*"))
    assert json.loads((run_dir / rundir.HISTORY).read_text()) == history
    environment = json.loads((run_dir / rundir.ENVIRONMENT).read_text())
    assert environment["torch"] == torch.__version__ and environment["device"] == "cpu"
    saved = Config.from_dict(json.loads((run_dir / rundir.CONFIG).read_text()))
    assert saved.epochs == 3 and saved.subset == 500
    expected_keys = {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds", "images_per_s"}
    assert expected_keys <= set(history[0])
    weights = torch.load(run_dir / rundir.WEIGHTS, weights_only=True)
    assert all(torch.equal(weights[k], v) for k, v in tiny_run.model.state_dict().items())


def test_a_runs_hardware_reads_as_its_gpu_or_its_cpu_and_threads():
    cpu = {"cpu": "Intel(R) Xeon(R) Processor", "gpu": None}
    assert rundir.describe_hardware(cpu | {"cpu_threads": 1}) == "Intel(R) Xeon(R) Processor (1 thread)"
    assert rundir.describe_hardware(cpu | {"cpu_threads": 2}) == "Intel(R) Xeon(R) Processor (2 threads)"
    assert rundir.describe_hardware(cpu | {"cpu_threads": 2, "gpu": "NVIDIA H200"}) == "NVIDIA H200"


def test_seeded_cpu_runs_are_deterministic(tiny_run, cifar_zip, cache_dir, tmp_path):
    again = fit(tiny_config(cifar_zip, cache_dir, tmp_path / "again"), progress=False)
    assert without_timing(again.history) == without_timing(tiny_run.history)


def interrupt_in_epoch_2(config, monkeypatch) -> None:
    """Train ``config`` and press Ctrl-C during epoch 2, after its training steps, before its evaluation."""
    calls = {"n": 0}
    real_evaluate = erav1.main.evaluate

    def evaluate_then_interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(erav1.main, "evaluate", evaluate_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        fit(config, progress=False)
    monkeypatch.setattr(erav1.main, "evaluate", real_evaluate)


def test_resume_after_interrupt_matches_an_uninterrupted_run(tiny_run, cifar_zip, cache_dir, tmp_path, monkeypatch):
    config = tiny_config(cifar_zip, cache_dir, tmp_path / "interrupted")
    interrupt_in_epoch_2(config, monkeypatch)
    assert len(json.loads((tmp_path / "interrupted" / rundir.HISTORY).read_text())) == 1

    with pytest.raises(RunDirError, match=r"--resume.*--overwrite"):
        fit(config, progress=False)
    config.resume = True
    resumed = fit(config, progress=False)
    assert without_timing(resumed.history) == without_timing(tiny_run.history)
    reference = torch.load(tiny_run.run_dir / rundir.WEIGHTS, weights_only=True)
    final = torch.load(tmp_path / "interrupted" / rundir.WEIGHTS, weights_only=True)
    assert reference.keys() == final.keys()
    assert all(torch.equal(reference[k], final[k]) for k in reference)


def test_resuming_a_finished_run_returns_it_without_training(tiny_run, cifar_zip, cache_dir):
    config = tiny_config(cifar_zip, cache_dir, tiny_run.run_dir, resume=True)
    weights = tiny_run.run_dir / rundir.WEIGHTS
    stamp = weights.stat().st_mtime_ns
    result = fit(config, progress=False)
    assert result.history == tiny_run.history
    saved = torch.load(weights, weights_only=True)
    assert all(torch.equal(saved[k], v.cpu()) for k, v in result.model.state_dict().items())
    assert weights.stat().st_mtime_ns == stamp


def test_resuming_with_changed_settings_is_refused(tiny_run, cifar_zip, cache_dir):
    config = tiny_config(cifar_zip, cache_dir, tiny_run.run_dir, resume=True, lr=0.2)
    with pytest.raises(RunDirError, match=r"lr: 0.02 -> 0.2"):
        fit(config, progress=False)


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("model", "vgg", "resnet18, resnet34"),
        ("optimizer", "rmsprop", "sgd, adam, adamw"),
        ("scheduler", "poly", "onecycle, cosine, step, none"),
        ("precision", "int8", "auto, fp32, bf16, fp16"),
        ("epochs", -1, "epochs must be at least 1"),
        ("cutout_p", 1.5, "cutout_p must be between 0 and 1"),
        ("cutout_fill", "grey", "unknown cutout_fill 'grey'; choose one of: zero, mean"),
        ("ema_decay", 1.0, r"ema_decay must be in \[0, 1\) \(0 turns the EMA off.*got 1.0"),
        ("ema_decay", -0.1, r"ema_decay must be in \[0, 1\).*got -0.1"),
    ],
)
def test_config_rejects_bad_values_with_the_choices(option, value, expected):
    with pytest.raises(UsageError, match=expected):
        Config(**{option: value})


def test_config_round_trips_through_a_dict():
    config = Config(epochs=3, optimizer="adamw", subset=100)
    assert Config.from_dict(config.to_dict()) == config
    with pytest.raises(UsageError, match="unknown config option"):
        Config.from_dict({"epochz": 3})
    assert {f.name for f in fields(Config)} == set(config.to_dict())


def test_expected_time_is_measured_before_training_and_says_nothing_for_a_finished_run(
    cifar_zip, cache_dir, tmp_path, tiny_run
):
    import re

    from erav1.main import describe_expected_time

    fresh = tiny_config(cifar_zip, cache_dir, tmp_path / "fresh", epochs=20)
    text = describe_expected_time(fresh)
    speed = float(re.search(r"about ([\d,.]+) images/s", text)[1].replace(",", ""))
    minutes = re.search(r"about \*\*(?:(\d+) h )?(\d+) min\*\*", text)
    expected = 20 * 500 / speed / 60
    assert "No GPU here" in text and "20 epochs of 500 images" in text
    assert abs(int(minutes[1] or 0) * 60 + int(minutes[2]) - expected) <= 1, "the estimate is the burst's speed"
    assert not (tmp_path / "fresh").exists(), "measuring writes nothing"
    finished = tiny_config(cifar_zip, cache_dir, tiny_run.run_dir, resume=True)
    assert "holds a finished run of 3 epochs" in describe_expected_time(finished)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_the_multi_tensor_optimizer_step_leaves_the_weights_bit_for_bit_the_same(name):
    """build_optimizer's foreach step against torch's per-parameter loop: the same arithmetic, so equal weights."""
    from erav1.models import get_model
    from erav1.utils.policies import build_optimizer, parameter_groups

    def train(foreach: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = get_model("resnet18", num_classes=10)
        if foreach:
            optimizer = build_optimizer(name, model, lr=0.1)
        else:
            per_parameter = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
            extra = {"momentum": 0.9, "nesterov": True} if name == "sgd" else {}
            optimizer = per_parameter(parameter_groups(model, 5e-4, True), lr=0.1, foreach=False, **extra)
        assert optimizer.defaults["foreach"] is foreach
        generator = torch.Generator().manual_seed(0)
        for _ in range(2):  # the second step also uses the momentum (Adam: moment) buffers
            x, y = torch.randn(4, 3, 32, 32, generator=generator), torch.randint(0, 10, (4,), generator=generator)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        return model.state_dict()

    multi, loop = train(foreach=True), train(foreach=False)
    unequal = [k for k in loop if not torch.equal(multi[k], loop[k])]
    assert not unequal, f"{len(unequal)} tensors differ, e.g. {unequal[:3]}"


# --- the EMA of the weights ------------------------------------------------------------------------------------

# 4 steps an epoch, and a short memory, so that every step shows in the average
EMA = dict(ema_decay=0.5, epochs=2, batch_size=64, subset=256)


@pytest.fixture(scope="module")
def ema_run(cifar_zip, cache_dir, tmp_path_factory):
    """A finished run with the EMA on, and the trained model's state (weights and buffers) after every step."""
    steps, models = [], []
    real_weight_ema = erav1.main.weight_ema

    def spy(model, decay):
        models.append(model)
        return real_weight_ema(model, decay)

    def after_step(optimizer, args, kwargs):
        steps.append({k: v.detach().clone() for k, v in models[-1].state_dict().items()})

    erav1.main.weight_ema = spy
    handle = register_optimizer_step_post_hook(after_step)
    try:
        result = fit(tiny_config(cifar_zip, cache_dir, tmp_path_factory.mktemp("ema-run"), **EMA), progress=False)
    finally:
        handle.remove()
        erav1.main.weight_ema = real_weight_ema
    return result, steps


def test_the_ema_is_scored_and_saved_and_is_the_average_of_every_step(ema_run, cifar_zip, cache_dir):
    result, steps = ema_run
    assert len(steps) == 2 * 4
    expected = dict(steps[0])  # AveragedModel starts from the first step's weights, then decays towards each next
    for state in steps[1:]:
        expected = {
            k: EMA["ema_decay"] * v + (1 - EMA["ema_decay"]) * state[k] if v.is_floating_point() else v
            for k, v in expected.items()
        }
    saved = torch.load(result.run_dir / rundir.WEIGHTS, weights_only=True)
    floats = [k for k, v in saved.items() if v.is_floating_point()]  # not num_batches_tracked, unused by training
    assert len(floats) == len(saved) - 20 and any("running_var" in k for k in floats)
    for k in floats:
        torch.testing.assert_close(saved[k], expected[k], rtol=1e-5, atol=1e-6, msg=k)
    assert not torch.allclose(saved["linear.weight"], steps[-1]["linear.weight"]), "model.pt is the average"
    checkpoint = torch.load(result.run_dir / rundir.CHECKPOINT, weights_only=True)
    assert all(torch.equal(checkpoint["model"][k], steps[-1][k]) for k in floats), "last.pt keeps the trained model"
    assert checkpoint["ema"]["n_averaged"] == 8
    assert all(torch.equal(checkpoint["ema"][f"module.{k}"], saved[k]) for k in saved)

    assert [r["scored"] for r in result.history] == ["ema", "ema"]
    runtime = Runtime.create("cpu", "fp32")
    test_set = load_data(str(cifar_zip), cache_dir, subset=EMA["subset"], verbose=False).test
    scores = erav1.main.evaluate(runtime.prepare(result.model), test_set, runtime, label_smoothing=0.1)
    assert all(torch.equal(v, saved[k]) for k, v in result.model.state_dict().items())
    assert result.final["test_acc"] == scores["acc"], "the history scores the average, not the trained model"
    assert result.final["test_loss"] == pytest.approx(scores["loss"], rel=1e-6)


def test_the_ema_step_counter_stays_on_the_host_whatever_the_models_device():
    """AveragedModel reads ``n_averaged`` on every step; on a GPU that read would wait for the device."""
    ema = erav1.main.weight_ema(ResNet18().to("meta"), 0.99)  # "meta" stands in for any other device
    assert next(ema.module.parameters()).device.type == "meta"
    assert ema.n_averaged.device.type == "cpu"


def test_a_run_without_ema_saves_no_average_and_records_nothing_new(tiny_run):
    assert "scored" not in tiny_run.history[-1]
    assert "ema" not in torch.load(tiny_run.run_dir / rundir.CHECKPOINT, weights_only=True)


def test_resume_with_ema_matches_an_uninterrupted_run(ema_run, cifar_zip, cache_dir, tmp_path, monkeypatch):
    reference, _ = ema_run
    config = tiny_config(cifar_zip, cache_dir, tmp_path / "interrupted", **EMA)
    interrupt_in_epoch_2(config, monkeypatch)  # after its steps have moved the EMA
    config.resume = True
    resumed = fit(config, progress=False)
    assert without_timing(resumed.history) == without_timing(reference.history)
    want = torch.load(reference.run_dir / rundir.WEIGHTS, weights_only=True)
    got = torch.load(tmp_path / "interrupted" / rundir.WEIGHTS, weights_only=True)
    assert [k for k in want if not torch.equal(want[k], got[k])] == []


@pytest.mark.parametrize(
    ("option", "value"), [("ema_decay", 0.9), ("zero_init_residual", True), ("cutout_fill", "mean")]
)
def test_resuming_with_another_lever_is_refused(ema_run, cifar_zip, cache_dir, option, value):
    run_dir = ema_run[0].run_dir
    config = tiny_config(cifar_zip, cache_dir, run_dir, resume=True, **(EMA | {option: value}))
    with pytest.raises(RunDirError, match=f"{option}: .* -> {value!r}"):
        fit(config, progress=False)
