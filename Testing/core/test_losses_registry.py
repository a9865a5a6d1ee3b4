"""The registry: build by name, list options, compound losses, clear errors."""

from __future__ import annotations

import pytest
import torch

from losslab.losses import (
    CompoundLoss,
    CrossEntropyLoss,
    DiceLoss,
    available_losses,
    get_loss,
)
from losslab.losses.registry import REQUIRED


def test_get_loss_builds_with_options():
    loss = get_loss("dice", alpha=2, include_background=False)
    assert isinstance(loss, DiceLoss) and loss.alpha == 2 and not loss.include_background
    assert isinstance(get_loss("cross_entropy", ignore_index=255), CrossEntropyLoss)


def test_available_losses_lists_options_with_defaults_and_types():
    infos = available_losses()
    assert {"cross_entropy", "dice", "compound"} <= set(infos)
    dice = infos["dice"]
    assert dice.cls is DiceLoss
    assert "eq. (3)" in dice.summary
    assert dice.options["alpha"].default == 1 and dice.options["alpha"].annotation == "int"
    assert dice.options["reduction"].default == "mean"
    for info in infos.values():
        assert info.summary, info.name
        for opt in info.options.values():
            assert opt.default is REQUIRED or opt.annotation, (info.name, opt.name)


def test_every_registered_loss_builds_from_defaults_or_says_what_it_needs():
    for name, info in available_losses().items():
        required = [o.name for o in info.options.values() if o.required]
        if required:
            with pytest.raises(ValueError, match=required[0]):
                get_loss(name)
        elif name == "margin_calibration":  # needs class_counts or margins: either one, so no default
            with pytest.raises(ValueError, match="class_counts"):
                get_loss(name)
        else:
            get_loss(name)


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="available losses: .*cross_entropy.*dice"):
        get_loss("dyce")


def test_unknown_option_lists_options():
    with pytest.raises(ValueError, match="unknown option.*alpah.*alpha"):
        get_loss("dice", alpah=2)


def test_compound_from_spec_is_weighted_sum():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4)
    t = torch.randint(0, 3, (2, 4, 4))
    loss = get_loss(
        "compound",
        terms=[{"name": "dice", "weight": 0.5, "alpha": 2}, {"name": "cross_entropy", "weight": 2.0}],
    )
    expected = 0.5 * DiceLoss(alpha=2)(x, t) + 2.0 * CrossEntropyLoss()(x, t)
    torch.testing.assert_close(loss(x, t), expected)


def test_compound_from_modules_and_reduction_override():
    torch.manual_seed(1)
    x = torch.randn(3, 2, 5)
    t = torch.randint(0, 2, (3, 5))
    loss = CompoundLoss([(1.0, DiceLoss()), (3.0, CrossEntropyLoss())], reduction="none")
    out = loss(x, t)
    assert out.shape == (3,)
    expected = DiceLoss(reduction="none")(x, t) + 3.0 * CrossEntropyLoss(reduction="none")(x, t)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(
    "terms, match",
    [
        ([], "non-empty"),
        ([{"weight": 1.0}], "name"),
        ([{"name": "nope"}], "unknown loss"),
        ([{"name": "dice", "weight": -1.0}], "weight"),
        ([(1.0, "dice")], "nn.Module"),
        ([{"name": "compound", "terms": [{"name": "dice"}]}], "nest"),
        ([{"name": "dice", "alpha": 5}], "alpha"),
    ],
)
def test_compound_errors(terms, match):
    with pytest.raises(ValueError, match=match):
        CompoundLoss(terms)
