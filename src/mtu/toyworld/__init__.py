"""Toy world with exact ground truth for training and measuring a tiny model on CPU (issue 4)."""

from .oracle import (edit_fidelity, edit_success, inpaint_preserved, inpaint_removed, oracle_accuracy, parse_scene,
                     sr_psnr, sr_ssim, t2i_faithful)
from .scene import Scene, Shape, caption, heldout_scenes, make_scenes, render, sample_scene, scene_split
from .tasks import Edit, edit_pair, inpaint_pair, sample_edit, sample_removal, sr_input, sr_pair, t2i_pair

__all__ = ["Edit", "Scene", "Shape", "caption", "edit_fidelity", "edit_pair", "edit_success", "heldout_scenes",
           "inpaint_pair", "inpaint_preserved", "inpaint_removed", "make_scenes", "oracle_accuracy", "parse_scene",
           "render", "sample_edit", "sample_removal", "sample_scene", "scene_split", "sr_input", "sr_pair",
           "sr_psnr", "sr_ssim", "t2i_faithful", "t2i_pair"]
