"""Toy world oracle: it reads renders back exactly, tolerates mild noise, and its scores discriminate."""

import numpy as np
from PIL import Image, ImageFilter

from mtu.toyworld.oracle import (edit_fidelity, edit_success, inpaint_preserved, inpaint_removed, oracle_accuracy,
                                 parse_scene, sr_psnr, sr_ssim, t2i_faithful)
from mtu.toyworld.scene import Scene, Shape, heldout_scenes, render, render_array
from mtu.toyworld.tasks import edit_pair, inpaint_pair, sample_edit, sample_removal, sr_input


def test_oracle_reads_heldout_renders_exactly():
    scenes = heldout_scenes(300)
    assert oracle_accuracy(scenes, 32) >= 0.99
    assert oracle_accuracy(scenes[:100], 64) >= 0.99


def test_oracle_tolerates_mild_noise_and_blur():
    rng = np.random.default_rng(0)
    scenes = heldout_scenes(100)
    noisy = [np.clip(render_array(s, 48) + rng.normal(0, 12, (48, 48, 3)), 0, 255).astype(np.uint8) for s in scenes]
    assert np.mean([t2i_faithful(image, s) for image, s in zip(noisy, scenes)]) >= 0.99
    blurred = [render(s, 48).filter(ImageFilter.GaussianBlur(0.6)) for s in scenes]
    assert np.mean([t2i_faithful(image, s) for image, s in zip(blurred, scenes)]) >= 0.99


def test_t2i_faithful_rejects_other_scenes():
    scenes = heldout_scenes(50)
    for scene, other in zip(scenes, scenes[1:]):
        assert t2i_faithful(render(scene), scene)
        assert not t2i_faithful(render(other), scene)


def test_edit_scores_discriminate():
    rng = np.random.default_rng(1)
    blank = Image.new("RGB", (32, 32), (0, 0, 0))
    for scene in heldout_scenes(50):
        edit = sample_edit(scene, rng)
        fields = edit_pair(edit, 32)
        assert edit_success(fields["target"], edit.after)
        assert not edit_success(fields["condition"], edit.after)  # doing nothing is not an edit
        assert not edit_success(blank, edit.after)
        assert edit_fidelity(fields["target"], fields["target"]) == float("inf")
        assert edit_fidelity(fields["condition"], fields["target"]) < 40


def test_inpaint_scores_discriminate():
    rng = np.random.default_rng(2)
    scenes = [scene for scene in heldout_scenes(80) if len(scene.shapes) >= 2]
    for scene in scenes:
        edit = sample_removal(scene, rng)
        fields = inpaint_pair(edit, 32)
        assert inpaint_removed(fields["target"], edit.shape)
        assert inpaint_preserved(fields["target"], fields["target"])
        assert not inpaint_removed(fields["condition"], edit.shape)  # the shape is still there
        blank = Image.new("RGB", (32, 32), tuple(np.asarray(fields["target"])[0, 0]))
        assert not inpaint_preserved(blank, fields["target"])  # the other shapes are gone


def test_sr_scores():
    hr = render(heldout_scenes(1)[0], 64)
    upscaled = sr_input(hr, seed=0).resize((64, 64), Image.BICUBIC)
    assert sr_psnr(hr, hr) == float("inf") and abs(sr_ssim(hr, hr) - 1.0) < 1e-9
    assert sr_psnr(upscaled, hr) < 40 and 0.0 < sr_ssim(upscaled, hr) < 0.99


def test_parse_of_empty_scene():
    assert parse_scene(render(Scene("white"))) == Scene("white")
    triangle = Scene("white", (Shape("triangle", "red", "small", "center"),))
    assert parse_scene(render(triangle)) == triangle
