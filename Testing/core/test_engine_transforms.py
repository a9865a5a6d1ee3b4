"""Augmentation across centres (issue 19, item 1): affine and elastic deformation, bias field, blur, lower
resolution, intensity standardisation (losslab.engine.transforms, wired into losslab.engine.data.augment and
the config's ``augmentation``). Each transform changes the image as intended, labels stay valid (only values
they held, set labels of partial annotations included) and follow the image's geometry, draws are a function
of the generator's seed, configs without the new transforms augment exactly as before, and a short training
run with all of them on works, deterministically."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from losslab.engine import ConfigError, train
from losslab.engine import transforms as T
from losslab.engine.checkpoint import check_resume_settings
from losslab.engine.config import DEFAULTS, validate_config
from losslab.engine.data import augment, normalize_intensity, sample_generator
from losslab.engine.synthetic import make_blobs_dataset

SHAPE = (20, 26, 32)  # non-cubic on purpose: rotations must stay rotations in voxel units
NEW = ("affine", "elastic", "bias_field", "blur", "resolution")


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ball(shape=SHAPE, centre=None, radius=6.0) -> torch.Tensor:
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij"))
    centre = torch.tensor(centre if centre is not None else [(n - 1) / 2 for n in shape]).view(-1, 1, 1, 1)
    return ((grid - centre) ** 2).sum(0).sqrt() <= radius


def _partial_label() -> torch.Tensor:
    """Background 0, leaves 1 and 2, and a set label 5 ("one of 3 or 4") as in a partial annotation."""
    label = torch.zeros(SHAPE, dtype=torch.long)
    label[_ball(radius=8.0)] = 1
    label[_ball(radius=5.0)] = 2
    label[_ball(centre=[10, 13, 24], radius=4.0)] = 5
    return label


def _options(**probs) -> dict:
    options = copy.deepcopy(DEFAULTS["augmentation"])
    options["flip"] = {"prob": 0.0, "axes": [2]}
    for name, value in probs.items():
        if name == "standardize":
            options[name] = {"enabled": True, "over": value}
        else:
            options[name]["prob"] = value
    return validate_config({"data": {"manifest": "m.json"}, "augmentation": options})["augmentation"]


# ------------------------------------------------------------------------------------------- spatial
def test_a_zero_affine_is_the_identity():
    image = torch.randn(2, *SHAPE, generator=_g())
    label = _partial_label()
    grid = T.sampling_grid(SHAPE, _g(), affine={"rotate": 0.0, "scale": [1.0, 1.0], "translate": 0.0})
    out, lab = T.warp(image, label, grid)
    assert torch.allclose(out, image, atol=1e-4) and torch.equal(lab, label)
    grid = T.sampling_grid(SHAPE, _g(), elastic={"magnitude": 0.0, "points": 5})
    assert torch.equal(T.warp(image, label, grid)[1], label)


def test_rotation_keeps_a_ball_a_ball_on_a_non_cubic_grid():
    """Built in voxel units: a centred ball rotated by up to 45 degrees keeps its size and its extent along
    every axis (a rotation in normalised coordinates would shear it into an ellipsoid on a 20x26x32 grid)."""
    ball = _ball(radius=7.0)
    for seed in range(4):
        grid = T.sampling_grid(
            SHAPE, _g(seed), affine={"rotate": 45.0, "scale": [1.0, 1.0], "translate": 0.0}
        )
        _, moved = T.warp(ball[None].float(), ball.long(), grid)
        moved = moved.bool()
        assert abs(int(moved.sum()) - int(ball.sum())) <= 0.05 * int(ball.sum())
        for axis in range(3):
            others = tuple(a for a in range(3) if a != axis)
            extent = int(moved.any(dim=others).sum())
            assert abs(extent - 15) <= 1, (seed, axis, extent)


def test_scale_and_translate_move_the_label_as_drawn():
    ball = _ball(radius=5.0)
    grid = T.sampling_grid(SHAPE, _g(3), affine={"rotate": 0.0, "scale": [1.5, 1.5], "translate": 0.0})
    _, zoomed = T.warp(ball[None].float(), ball.long(), grid)
    assert 1.5**3 * 0.85 < zoomed.sum() / ball.sum() < 1.5**3 * 1.15  # zoom in: 1.5x per axis
    grid = T.sampling_grid(SHAPE, _g(3), affine={"rotate": 0.0, "scale": [1.0, 1.0], "translate": 0.2})
    _, shifted = T.warp(ball[None].float(), ball.long(), grid)
    centroid = lambda m: torch.stack(torch.nonzero(m).float().mean(0).unbind())  # noqa: E731
    moved = centroid(shifted.bool()) - centroid(ball)
    assert moved.abs().max() > 1.0 and int(shifted.sum()) == int(ball.sum())  # moved, whole, not deformed


def test_elastic_deformation_is_smooth_and_changes_the_shape():
    label = _partial_label()
    grid = T.sampling_grid(SHAPE, _g(1), elastic={"magnitude": 3.0, "points": 5})
    identity = T.sampling_grid(SHAPE, _g(1))
    shift = (grid - identity)[0] * torch.tensor([n / 2 for n in reversed(SHAPE)])  # voxels, (x, y, z)
    assert shift.abs().max() > 0.5  # it moves voxels ...
    step = max(shift.diff(dim=a).abs().max().item() for a in range(3))
    assert step < 0.5 * shift.abs().max().item()  # ... smoothly: neighbours move alike
    _, moved = T.warp(label[None].float(), label, grid)
    assert not torch.equal(moved, label)
    assert set(moved.unique().tolist()) <= set(label.unique().tolist())


def test_image_and_label_share_the_geometry_and_labels_keep_their_values():
    """The image channel is the label map as intensities: after a strong affine + elastic warp the
    interpolated image, rounded, equals the warped label almost everywhere (they differ only where bilinear
    interpolation straddles a boundary), and the label holds only its own values, set label 5 included."""
    label = _partial_label()
    options = _options(affine=1.0, elastic=1.0)
    options["affine"].update(rotate=30.0, translate=0.1)
    options["elastic"]["magnitude"] = 3.0
    image = torch.stack([label.float(), torch.rand(SHAPE, generator=_g())])
    for seed in range(3):
        img, lab = augment(image, label, options, sample_generator(seed, 1, 0), intensity_channels=0)
        assert lab.dtype == torch.long and set(lab.unique().tolist()) <= {0, 1, 2, 5}
        assert 5 in lab.unique().tolist() and not torch.equal(lab, label)
        inside = (img[0] - img[0].round()).abs() < 1e-3  # voxels not on a boundary
        assert torch.equal(img[0][inside].round().long(), lab[inside]) and inside.float().mean() > 0.8
        assert (img[0].round().long() == lab).float().mean() > 0.97


# ------------------------------------------------------------------------------------------- intensity
def test_bias_field_is_smooth_positive_and_multiplies_the_intensities():
    field = T.bias_field(SHAPE, _g(2), coefficient=0.5, order=3)
    assert field.shape == SHAPE and float(field.min()) > 0 and float(field.std()) > 0.05
    log = field.log()  # a cubic polynomial: its slope changes slowly (white noise: |d2| ~ 2 |d1|)
    for a in range(3):
        first, second = log.diff(dim=a).abs().mean(), log.diff(n=2, dim=a).abs().mean()
        assert float(second) < 0.25 * float(first), (a, float(first), float(second))
    assert torch.equal(T.bias_field(SHAPE, _g(2), 0.0, 3), torch.ones(SHAPE))
    image = torch.rand(1, *SHAPE, generator=_g()) + 1.0
    out = T.apply_bias_field(image, field)
    lo = float(image.min())
    above = (image - lo) > 0.1  # away from the minimum, where the ratio is well defined
    ratio = (out - lo)[above] / (image - lo)[above]
    assert torch.allclose(ratio, field.expand_as(out)[above], rtol=1e-4)


def test_blur_smooths_along_the_chosen_axes_only():
    spike = torch.zeros(1, *SHAPE)
    spike[0, 10, 13, 16] = 1.0
    out = T.gaussian_blur(spike, [1.5, 0.0, 0.0])
    assert out[0, :, 13, 16].count_nonzero() > 5 and out[0, 10].count_nonzero() == 1  # along z only
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-5)  # mass kept
    noise = torch.randn(1, *SHAPE, generator=_g())
    assert float(T.gaussian_blur(noise, [1.0, 1.0, 1.0]).std()) < 0.5 * float(noise.std())
    assert torch.equal(T.gaussian_blur(noise, [0.0, 0.0, 0.0]), noise)


def test_lower_resolution_loses_detail_along_its_axis():
    z = torch.arange(SHAPE[0]).view(-1, 1, 1).expand(SHAPE)
    x = torch.arange(SHAPE[2]).view(1, 1, -1).expand(SHAPE)
    stripes_z = (z % 2).float()[None]  # alternate slices: what a thick slice averages away
    stripes_x = (x % 2).float()[None]
    out = T.simulate_resolution(torch.cat([stripes_z, stripes_x]), [4.0, 1.0, 1.0])
    assert float(out[0].std()) < 0.2 * float(stripes_z.std())  # z detail gone
    assert torch.allclose(out[1], stripes_x[0])  # x untouched
    assert torch.equal(T.simulate_resolution(stripes_z, [1.0, 1.0, 1.0]), stripes_z)


def test_standardize_z_scores_inside_the_support_and_zeroes_outside():
    brain = _ball(radius=8.0)
    image = (torch.rand(1, *SHAPE, generator=_g()) * 50 + 100) * brain
    out = T.standardize(image, brain)
    inside = out[0][brain]
    assert float(inside.mean()) == pytest.approx(0, abs=1e-5)
    assert float(((inside - inside.mean()) ** 2).mean().sqrt()) == pytest.approx(1, abs=1e-4)
    assert not out[0][~brain].any()
    everywhere = T.standardize(image, None)
    assert float(everywhere.mean()) == pytest.approx(0, abs=1e-5)


def test_zscore_nonzero_normalisation_is_the_same_in_numpy_and_torch():
    brain = _ball(radius=8.0).numpy()
    image = (np.random.default_rng(0).uniform(100, 150, SHAPE) * brain).astype(np.float32)
    a = normalize_intensity(image, "zscore_nonzero")
    b = normalize_intensity(torch.from_numpy(image), "zscore_nonzero").numpy()
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert not a[~brain].any() and abs(a[brain].mean()) < 1e-4 and abs(a[brain].std() - 1) < 1e-3
    np.testing.assert_array_equal(normalize_intensity(np.zeros(4, np.float32), "zscore_nonzero"), np.zeros(4))


@pytest.mark.parametrize("name", ["bias_field", "blur", "resolution"])
def test_intensity_transforms_leave_labels_and_extra_channels_alone(name):
    label = _partial_label()
    image = torch.stack([label.float() * 40 + torch.rand(SHAPE, generator=_g()), label.float() / 5])
    options = _options(**{name: 1.0})
    img, lab = augment(image, label, options, sample_generator(0, 0, 0), intensity_channels=1)
    assert torch.equal(lab, label) and torch.equal(img[1], image[1])
    assert not torch.allclose(img[0], image[0], atol=1e-3)


def test_augment_with_standardize_gives_zscored_brain_and_zero_outside():
    label = _partial_label()
    brain = label > 0
    image = ((label.float() * 40 + 60) * brain)[None]
    options = _options(bias_field=1.0, blur=1.0, resolution=1.0, noise=1.0, standardize="nonzero")
    img, lab = augment(image, label, options, sample_generator(0, 2, 1), intensity_channels=1)
    assert not img[0][~brain].any()  # the background (outside the mask) stays 0, as at inference
    assert float(img[0][brain].mean()) == pytest.approx(0, abs=1e-4)


def test_dilate_grows_by_the_radius_between_a_diamond_and_a_cube():
    point = torch.zeros(11, 11, 11, dtype=torch.bool)
    point[5, 5, 5] = True
    offsets = torch.stack(torch.meshgrid(*[torch.arange(11) - 5] * 3, indexing="ij"))
    assert torch.equal(T.dilate(point, 0), point)
    for radius in (1, 2, 3):
        grown = T.dilate(point, radius)
        diamond = offsets.abs().sum(0) <= radius
        cube = offsets.abs().amax(0) <= radius
        assert bool(grown[diamond].all()) and not bool(grown[~cube].any()), radius
        assert int(grown.sum()) < int(cube.sum()) or radius == 1
    flat = torch.zeros(7, 7, dtype=torch.bool)  # 2D images too
    flat[3, 3] = True
    assert int(T.dilate(flat, 1).sum()) == 5 and int(T.dilate(flat, 2).sum()) == 21


@pytest.mark.parametrize("radius", [0, 2])
def test_foreground_mask_zeroes_the_image_outside_the_dilated_label(radius):
    """As if the image were masked by a brain mask (or one ``radius`` voxels too generous): outside it 0,
    inside unchanged; labels and extra channels untouched."""
    label = _partial_label()
    image = torch.stack([torch.rand(SHAPE, generator=_g()) + 1.0, label.float() / 5])
    options = _options(foreground_mask=1.0)
    options["foreground_mask"]["dilate"] = [radius, radius]
    img, lab = augment(image, label, options, sample_generator(0, 0, 0), intensity_channels=1)
    keep = T.dilate(label != 0, radius)
    assert torch.equal(lab, label) and torch.equal(img[1], image[1])
    assert not img[0][~keep].any() and torch.equal(img[0][keep], image[0][keep])
    if radius:
        assert bool((img[0][label == 0] != 0).any())  # the ring beyond the label keeps its intensities


def test_foreground_mask_then_standardize_matches_a_masked_input_at_inference():
    label = _partial_label()
    image = (label.float() * 40 + 60 + torch.rand(SHAPE, generator=_g()))[None]
    options = _options(foreground_mask=1.0, standardize="nonzero")
    img, _ = augment(image, label, options, sample_generator(0, 0, 0), intensity_channels=1)
    masked = normalize_intensity((image[0] * (label != 0)).numpy(), "zscore_nonzero")
    np.testing.assert_allclose(img[0].numpy(), masked, atol=1e-4)


def test_foreground_mask_is_drawn_with_its_probability():
    label = _partial_label()
    image = torch.rand(1, *SHAPE, generator=_g()) + 1.0
    options = _options(foreground_mask=0.5)
    masked = [
        bool((augment(image, label, options, sample_generator(3, 0, i), 1)[0][0] == 0).any())
        for i in range(40)
    ]
    assert 8 <= sum(masked) <= 32


# ------------------------------------------------------------------------------------------- the whole
def test_every_transform_on_is_reproducible_and_differs_between_samples():
    label = _partial_label()
    image = torch.stack([label.float() * 30 + 50 * torch.rand(SHAPE, generator=_g())])
    options = _options(**{n: 1.0 for n in NEW}, gamma=1.0, contrast=1.0, noise=1.0, standardize="all")
    a = augment(image, label, options, sample_generator(7, 3, 2), intensity_channels=1)
    b = augment(image, label, options, sample_generator(7, 3, 2), intensity_channels=1)
    c = augment(image, label, options, sample_generator(7, 3, 3), intensity_channels=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])
    assert set(a[1].unique().tolist()) <= {0, 1, 2, 5} and torch.isfinite(a[0]).all()


def test_configs_without_the_new_transforms_augment_exactly_as_before():
    """A transform at probability 0 draws nothing: the old five (flip, scale, gamma, contrast, noise) give
    the same image and label with or without the new keys, so earlier runs resume and reproduce."""
    label = _partial_label()
    image = torch.stack([label.float() + torch.rand(SHAPE, generator=_g()), label.float()])
    new = _options(scale=1.0, gamma=1.0, contrast=1.0, noise=1.0)
    new["flip"]["prob"] = 1.0
    old = {k: new[k] for k in ("flip", "scale", "gamma", "contrast", "noise")}  # a config of before
    a = augment(image, label, new, sample_generator(0, 1, 2), intensity_channels=1)
    b = augment(image, label, old, sample_generator(0, 1, 2), intensity_channels=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # every probability 0 (standardize off): not one number drawn, the generator's state is untouched
    g = sample_generator(0, 1, 2)
    state = g.get_state()
    out = augment(image, label, _options(), g, intensity_channels=1)
    assert torch.equal(g.get_state(), state) and torch.equal(out[0], image) and torch.equal(out[1], label)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"affine": {"rotate": 200}}, ["augmentation.affine.rotate", "200"]),
        ({"affine": {"scale": [1.2, 0.8]}}, ["augmentation.affine.scale"]),
        ({"affine": {"translate": 0.7}}, ["augmentation.affine.translate", "0.7"]),
        ({"elastic": {"points": 1}}, ["augmentation.elastic.points", ">= 2"]),
        ({"bias_field": {"order": 9}}, ["augmentation.bias_field.order", "1..5"]),
        ({"blur": {"prob": 2}}, ["augmentation.blur.prob", "2"]),
        ({"resolution": {"factor": [0.5, 2]}}, ["augmentation.resolution.factor", "1 <= low"]),
        ({"resolution": {"axes": [3]}}, ["augmentation.resolution.axes", "[3]"]),
        ({"standardize": {"over": "brain"}}, ["augmentation.standardize.over", "brain"]),
        ({"standardize": {"enabled": "yes"}}, ["augmentation.standardize.enabled"]),
        ({"sharpen": {"prob": 1}}, ["augmentation.sharpen"]),
        ({"foreground_mask": {"dilate": [3, 1]}}, ["augmentation.foreground_mask.dilate", "[3, 1]"]),
        ({"foreground_mask": {"dilate": [-1, 2]}}, ["augmentation.foreground_mask.dilate", "0 <= low"]),
        ({"foreground_mask": {"dilate": [0.5, 1]}}, ["augmentation.foreground_mask.dilate", "whole"]),
        ({"foreground_mask": {"prob": 1.5}}, ["augmentation.foreground_mask.prob", "1.5"]),
    ],
)
def test_bad_options_are_config_errors_naming_the_key(change, words):
    with pytest.raises(ConfigError) as err:
        validate_config({"data": {"manifest": "m.json"}, "augmentation": change})
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_a_run_started_before_the_new_keys_resumes_unless_they_change():
    cfg = validate_config({"data": {"manifest": "m.json"}})
    saved = json.loads(json.dumps(cfg))
    for name in (*NEW, "standardize"):
        del saved["augmentation"][name]  # the config a run of the earlier engine saved
    check_resume_settings(saved, cfg, "last.pt", defaults=DEFAULTS)  # the defaults: no change
    changed = validate_config({"data": {"manifest": "m.json"}, "augmentation": {"elastic": {"prob": 0.5}}})
    with pytest.raises(ValueError, match=r"augmentation.elastic.prob: None in the run, 0.5 now"):
        check_resume_settings(saved, changed, "last.pt", defaults=DEFAULTS)
    with pytest.raises(ValueError, match=r"augmentation.affine.prob: None in the run, 0.0 now"):
        check_resume_settings(saved, cfg, "last.pt")  # without defaults (ICE's own configs): strict as before


def test_a_short_training_run_with_every_transform_is_deterministic(tmp_path):
    """Two epochs of leaf-Dice on tiny partially annotated volumes (set labels) with all the cross-centre
    transforms on: it trains (finite losses), and the same seed gives the same run, bit for bit on CPU."""
    manifest = make_blobs_dataset(
        tmp_path / "data", n_cases=4, shape=(16, 16, 16), seed=2, n_val=1, partial=True
    )
    aug = {n: {"prob": 0.8} for n in NEW}
    aug["foreground_mask"] = {"prob": 0.5, "dilate": [0, 2]}
    aug.update(gamma={"prob": 0.3}, contrast={"prob": 0.3}, noise={"prob": 0.3})
    aug["standardize"] = {"enabled": True, "over": "all"}
    aug["elastic"]["magnitude"] = 1.5

    def run(out, **more):
        cfg = {
            "data": {"manifest": str(manifest), "normalize": "zscore"},
            "network": {"features": [4, 8], "norm": "instance"},
            "loss": {"name": "leaf_dice"},
            "epochs": 2,
            "batch_size": 2,
            "device": "cpu",
            "output_dir": str(out),
            "augmentation": aug,
            "plot_every": 0,
        }
        return train(cfg, **more)

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    assert len(first.history) == 2 and all(np.isfinite(h["train_loss"]) for h in first.history)
    assert [h["train_loss"] for h in first.history] == [h["train_loss"] for h in second.history]
    saved = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=False)["config"]
    assert saved["augmentation"]["elastic"] == {"prob": 0.8, "magnitude": 1.5, "points": 5}


def test_a_run_of_the_earlier_engine_resumes(tmp_path):
    """A run whose checkpoint config predates the new keys (they are deleted from it here) resumes through
    the trainer; the same run with one of them changed is refused."""
    from losslab.engine import load_checkpoint, save_checkpoint

    manifest = make_blobs_dataset(tmp_path / "data", n_cases=3, shape=(12, 12, 12), seed=4, n_val=1)
    cfg = {
        "data": {"manifest": str(manifest)},
        "network": {"features": [4, 8], "norm": "instance"},
        "epochs": 1,
        "batch_size": 2,
        "device": "cpu",
        "output_dir": str(tmp_path / "run"),
        "augmentation": {"noise": {"prob": 0.5}},
        "plot_every": 0,
    }
    train(cfg)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    for name in (*NEW, "standardize"):
        del state["config"]["augmentation"][name]
    save_checkpoint(last, state)
    changed = {**cfg, "epochs": 2, "augmentation": {"noise": {"prob": 0.5}, "blur": {"prob": 0.5}}}
    with pytest.raises(ValueError, match=r"augmentation.blur.prob: None in the run, 0.5 now"):
        train(changed, resume=True)
    assert len(train({**cfg, "epochs": 2}, resume=True).history) == 2
