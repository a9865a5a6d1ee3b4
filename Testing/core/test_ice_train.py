"""ICE editing-model training (losslab.ice.training, `losslab ice train`): every method of Table 1 runs on
tiny simulated data and lowers its loss, the checkpoint edits through EditingModel, the InterCNN loop
accumulates edits, the run folder rules, resume, and config errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from losslab import ice
from losslab.cli import main
from losslab.engine.checkpoint import RunFolderError, load_checkpoint
from losslab.ice.training import (
    interaction_args,
    intercnn_round,
    load_training_config,
    make_sample,
    method_loss,
    perturbed_initial,
    train_editing,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("ice") / "data"
    assert main(["ice", "simulate", str(out), "--cases", "6", "--size", "24", "--spacing", "5.88"]) == 0
    return out / "dataset.json"


def _config(tiny, out, **extra):
    cfg = {
        "data": {"manifest": str(tiny)},
        "initial": {"source": "perturb"},
        "sigma_mm": 29.4,  # 5 voxels of 5.88 mm
        "batch_size": 2,
        "epochs": 1,
        "steps_per_epoch": 12,
        "threads": 1,
        "output_dir": str(out),
    }
    cfg.update(extra)
    return cfg


@pytest.mark.parametrize(
    ("method", "scribble"),
    [("editing", "piece"), ("ce", "piece"), ("dice", "piece"), ("intercnn", "piece"), ("editing", "contour")],
)
def test_each_method_runs_and_lowers_its_loss(tiny, tmp_path, method, scribble):
    losses = []
    result = train_editing(
        _config(tiny, tmp_path / method, method=method, scribble=scribble),
        progress=lambda e: losses.append(e["loss"]) if e["event"] == "batch" else None,
    )
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    out = tmp_path / method
    for name in ("model.pt", "metrics.jsonl", "summary.json", "curves.png", "checkpoints/last.pt"):
        assert (out / name).is_file(), name
    info = load_checkpoint(result.model_path)["model_info"]
    assert info["channel_names"] == ["image", "initial", "heatmap"]
    assert info["ice"] == {"method": method, "sigma_mm": 29.4}
    # the checkpoint edits through the one editing step
    case = ice.read_case(next(iter(ice.dataset_cases(tiny, "test").values())))
    model = ice.EditingModel.load(result.model_path, sigma_mm=29.4)
    edit = ice.furthest_cas_interaction(case, case.label)
    assert model.edit(case.image, case.label, edit.voxels, case.spacing).mask.shape == case.grid.shape


def test_editing_loss_term_is_eqs_1_to_3_on_the_foreground_logit():
    logits = torch.randn(2, 2, 4, 4, 4)
    batch = {
        "y": (torch.rand(2, 4, 4, 4) > 0.5).float(),
        "initial": (torch.rand(2, 4, 4, 4) > 0.5).float(),
        "attention": torch.rand(2, 4, 4, 4),
    }
    p = torch.softmax(logits, 1)[:, 1]
    a, y, yi = batch["attention"], batch["y"], batch["initial"]

    def bce(t):
        return -(t * torch.log(p) + (1 - t) * torch.log(1 - p))

    expected = (a * bce(y) + (1 - a) * bce(yi)).mean()
    torch.testing.assert_close(method_loss("editing", logits, batch), expected, rtol=1e-4, atol=1e-5)
    ce = torch.nn.functional.cross_entropy(logits, y.long())
    torch.testing.assert_close(method_loss("ce", logits, batch), ce)
    torch.testing.assert_close(method_loss("intercnn", logits, batch), ce)


def test_y_init_from_a_segmentation_model_is_the_default_way(tiny, tmp_path):
    seg = tmp_path / "seg"
    config = {
        "data": {"manifest": str(tiny), "normalize": "none"},
        "network": {"preset": "ice_segmentation", "features": [4, 8, 16, 32]},
        "loss": {"name": "cross_entropy"},
        "scheduler": {"name": "none"},
        "batch_size": 2,
        "epochs": 1,
        "augmentation": {"enabled": False},
        "device": "cpu",
        "output_dir": str(seg),
    }
    (tmp_path / "seg.json").write_text(json.dumps(config))
    assert main(["train", str(tmp_path / "seg.json")]) == 0
    cfg = _config(tiny, tmp_path / "run", initial={"model": str(seg / "model.pt")}, steps_per_epoch=2)
    (tmp_path / "edit.json").write_text(json.dumps(cfg))
    assert load_training_config(tmp_path / "edit.json")["initial"]["source"] == "model"
    assert main(["ice", "train", str(tmp_path / "edit.json")]) == 0
    assert (tmp_path / "run" / "model.pt").is_file()
    # a second run into the same folder is refused; --overwrite replaces it; --resume continues
    with pytest.raises(RunFolderError):
        train_editing(tmp_path / "edit.json")
    assert main(["ice", "train", str(tmp_path / "edit.json"), "epochs=2", "--resume"]) == 0
    # from Python too, a resumed run keeps its settings: another batch size is refused, naming it
    with pytest.raises(ValueError, match="batch_size"):
        train_editing(tmp_path / "edit.json", ["batch_size=1", "epochs=3"], resume=True)
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    # a segmentation model with the wrong inputs is refused
    with pytest.raises(ValueError, match="1 channel"):
        train_editing(_config(tiny, tmp_path / "r2", initial={"model": str(tmp_path / "run" / "model.pt")}))


def test_intercnn_accumulates_edits_and_restarts(tiny):
    case = ice.read_case(next(iter(ice.dataset_cases(tiny, "train").values())))
    y = case.label.astype(bool)
    initial = perturbed_initial(y, case.spacing, np.random.default_rng(1), 20.0, 2)
    state, first = intercnn_round(case, None, initial, iterations=3, seed=0)
    assert first is not None and state.rounds == 1
    np.testing.assert_array_equal(state.scribbles, first.voxels)
    np.testing.assert_array_equal(state.prediction, initial)
    # the model "answers" by fixing the first frame's region only: the next scribble goes elsewhere and adds up
    state.prediction = np.where(first.voxels, y, state.prediction).astype(np.uint8)
    before = state.scribbles.copy()
    state, second = intercnn_round(case, state, initial, iterations=3, seed=1)
    assert second is not None and state.rounds == 2
    np.testing.assert_array_equal(state.scribbles, before | second.voxels)
    # the sample's inputs: the current prediction as y_init, u from the union of the scribbles
    sample = make_sample(case, state.prediction, state.scribbles, 29.4, None, np.random.default_rng(0))
    np.testing.assert_array_equal(sample["input"][1], state.prediction.astype(np.float32))
    np.testing.assert_allclose(sample["input"][2], ice.encode(state.scribbles, case.spacing, 29.4), atol=1e-6)
    state, _ = intercnn_round(case, state, initial, iterations=3, seed=2)
    assert state.rounds == 3
    state, restart = intercnn_round(case, state, initial, iterations=3, seed=3)
    assert state.rounds == 1, "after `iterations` rounds the case starts again from y_init"
    np.testing.assert_array_equal(state.prediction, initial)
    np.testing.assert_array_equal(state.scribbles, restart.voxels)


class FixedArgmaxNet(torch.nn.Module):
    """A stand-in editing network whose argmax is a fixed mask whatever its input (a positive, trainable scale
    keeps the argmax); it records the input of each training step."""

    def __init__(self, mask):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.zeros(()))
        self.register_buffer("sign", torch.as_tensor(np.where(mask, 1.0, -1.0), dtype=torch.float32))
        self.train_inputs = []

    def forward(self, x):
        if self.training and torch.is_grad_enabled():
            self.train_inputs.append(x.detach().clone())
        fg = self.sign.expand(x.shape[0], *self.sign.shape) * (1 + self.scale**2)
        return torch.stack([-fg, fg], 1)


@pytest.mark.parametrize(
    "settings",
    [
        {"method": "intercnn", "intercnn": {"iterations": 3}},
        {"method": "editing", "sequence": {"length": 3}},
    ],
    ids=["intercnn", "editing-sequence"],
)
def test_sequences_feed_the_networks_own_prediction_back(tiny, tmp_path, monkeypatch, settings):
    # The loop of the paper's InterCNN baseline, and the own-output sequences of the editing loss: after a
    # round, a case's prediction is the network's argmax of the whole volume, and the next time the case is
    # drawn (within the sequence's length) it is that round's y_init. InterCNN's u holds the union of the
    # scribbles so far; the editing sequence's u the round's own scribble.
    import losslab.nets

    cases = [ice.read_case(p) for p in ice.dataset_cases(tiny, "train").values()]
    shape = cases[0].grid.shape
    grid = np.indices(shape).astype(float)
    ball = sum((g - (n - 1) / 2) ** 2 for g, n in zip(grid, shape)) <= (shape[0] / 4) ** 2
    net = FixedArgmaxNet(ball)
    monkeypatch.setattr(losslab.nets, "build_network", lambda spec: net)
    steps = 2 * len(cases)  # batch 2: every case drawn 4 times, rounds 1..3 then a restart
    cfg = _config(tiny, tmp_path / "run", steps_per_epoch=steps, **settings)
    cfg["data"]["val_split"] = "none"
    train_editing(cfg)
    rounds = {i: [] for i in range(len(cases))}
    for batch in net.train_inputs:
        for sample in batch.numpy():
            (i,) = [k for k, c in enumerate(cases) if np.array_equal(c.image, sample[0])]
            rounds[i].append((sample[1] != 0, sample[2]))
    for i, inputs in rounds.items():
        assert len(inputs) == 4, (i, len(inputs))
        assert not np.array_equal(inputs[0][0], ball), "round 1 starts from the case's y_init"
        for k in (1, 2):
            np.testing.assert_array_equal(inputs[k][0], ball, err_msg=f"case {i}, round {k + 1}")
        assert not np.array_equal(inputs[3][0], ball), "after 3 rounds the case starts again"
        if settings["method"] == "intercnn":  # from its cached y_init (the others: a fresh start)
            np.testing.assert_array_equal(inputs[3][0], inputs[0][0])
        # u: a peak of 1 on each scribble; InterCNN's second round still holds the first round's peak
        first_peak = inputs[0][1] > 0.999
        assert first_peak.any()
        kept = bool(np.all(inputs[1][1][first_peak] > 0.999))
        assert kept == (settings["method"] == "intercnn"), (i, kept)


def test_scribble_weight_adds_the_cross_entropy_on_the_scribbles_neighbourhood(tiny):
    case = ice.read_case(next(iter(ice.dataset_cases(tiny, "train").values())))
    initial = perturbed_initial(case.label, case.spacing, np.random.default_rng(1), 20.0, 2)
    edit = ice.training_interaction(case, initial)
    sample = make_sample(case, initial, edit.voxels, 29.4, None, np.random.default_rng(0), scribble_ring=True)
    ring = sample["scribble"] != 0
    assert ring[edit.voxels].all() and ring.sum() > edit.voxels.sum()  # the scribble and its neighbours
    batch = {k: torch.from_numpy(v[None]) for k, v in sample.items()}
    logits = torch.randn(1, 2, *case.grid.shape)
    plain = method_loss("editing", logits, batch)
    z = logits[:, 1] - logits[:, 0]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z, batch["y"], reduction="none")
    expected = plain + 2.0 * bce[batch["scribble"] != 0].mean()
    torch.testing.assert_close(method_loss("editing", logits, batch, scribble_weight=2.0), expected)


def test_perturb_fraction_starts_some_samples_from_perturbed_y(tiny, tmp_path, monkeypatch):
    # with initial.source = model, perturb_fraction of the starts are y perturbed instead of the cached y_init
    import losslab.ice.training as training

    cases = [ice.read_case(p) for p in ice.dataset_cases(tiny, "train").values()]
    empty = [np.zeros(c.grid.shape, np.uint8) for c in cases]
    monkeypatch.setattr(
        training, "model_initial", lambda cases, *a, **k: [np.zeros_like(c.label) for c in cases]
    )
    seen = []
    real = training.make_sample

    def spy(case, initial, *args, **kwargs):
        seen.append(bool(np.any(initial)))
        return real(case, initial, *args, **kwargs)

    monkeypatch.setattr(training, "make_sample", spy)
    cfg = _config(tiny, tmp_path / "run", steps_per_epoch=10)
    cfg["initial"] = {"source": "model", "model": "any", "perturb_fraction": 0.5}
    cfg["data"]["val_split"] = "none"
    train_editing(cfg)
    assert len(seen) == 20 and 3 <= sum(seen) <= 17, seen  # about half the starts are perturbed y
    del empty


def test_crop_follows_the_scribble(tiny):
    case = ice.read_case(next(iter(ice.dataset_cases(tiny, "train").values())))
    scribble = np.zeros(case.grid.shape, bool)
    scribble[2, 20, 3] = True
    sample = make_sample(case, case.label, scribble, 29.4, [16, 16, 16], np.random.default_rng(0))
    assert sample["input"].shape == (3, 16, 16, 16) and sample["y"].shape == (16, 16, 16)
    assert sample["attention"].max() == pytest.approx(1.0), "the crop holds the scribble"


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("method=focal", "method"),
        ("batch_size=0", "batch_size"),
        ("initial.source=model", "initial.model"),
        ("patch_size=[4,4]", "patch_size"),
        ("sigma_mm=-1", "sigma_mm"),
        ("scribble=line", "scribble"),
        ("epoch=3", "unknown key"),
        ("sequence.length=0", "sequence.length"),
        ("sequence.steps=2", "unknown key"),
        ("initial.perturb_fraction=1.5", "perturb_fraction"),
        ("scribble_weight=-1", "scribble_weight"),
        ("scribble_weight=nan", "scribble_weight"),
        ("method=ce scribble_weight=1", "method 'editing' only"),
    ],
)
def test_config_errors_name_the_key(tiny, tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        load_training_config(_config(tiny, tmp_path / "x"), override.split())


def test_scribble_key_reaches_the_training_interaction(tiny, tmp_path):
    # the run's interactions come from interaction_args(cfg): scribble=contour draws y's whole contour on the
    # frame of maximum error, more voxels than the paper's piece there
    case = ice.read_case(next(iter(ice.dataset_cases(tiny, "train").values())))
    y_init = case.label.copy()  # y with the half beyond its centre along the last axis cut off
    y_init[..., int(np.argwhere(case.label)[:, 2].mean()) :] = 0
    piece, whole = (
        ice.training_interaction(
            case, y_init, **interaction_args(load_training_config(_config(tiny, tmp_path / s, scribble=s)))
        )
        for s in ("piece", "contour")
    )
    assert piece.frame == whole.frame and np.all(whole.voxels[piece.voxels])
    assert whole.voxels.sum() > piece.voxels.sum()
