"""Pipelines that save and reload with the MTU adapter inside (issue 14, point 4), keep the base's safety checker
(point 7), and read bases with only fp16-variant weights (point 3): realistic tiny folders made here (a
StableDiffusionPipeline folder with safety checker and feature extractor, an fp16-only copy, an SDXL folder, paths
with spaces), loaded from another working directory than the one they were made in."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline

import mtu
from mtu.architectures import build_unet
from mtu.errors import InputError
from mtu.pipelines import MTUPipeline, MTUStableDiffusionXLPipeline
from mtu.pipelines.pipeline_mtu import SafetyCheckerDisabledWarning

from .conftest import nudge
from .pipeline_folder_parts import (
    save_fp16_variant_copy,
    save_sd_folder,
    save_sdxl_folder,
    tiny_feature_extractor,
    tiny_safety_checker,
)
from .sdxl_parts import tiny_sdxl_unet
from .test_pipeline_mtu import one_thread  # noqa: F401 (autouse fixture)

PROMPT = "make the circle blue"
TASKS = ["t2i", "edit"]


def upcycled_adapter(base, folder, variant=None):
    """An MTU adapter made from the UNet of the pipeline folder `base`, weights nudged off their init."""
    model = mtu.upcycle(mtu.load_base_unet(str(base), variant=variant),
                        mtu.MTUConfig(tasks=TASKS, num_experts=4)).eval()
    nudge(model)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    """{"base": an SD folder with a safety checker that flags nothing, "flagging": one that flags everything,
    "adapter": the adapter made from base's UNet}; every path has a space in it."""
    root = tmp_path_factory.mktemp("made here")
    base = save_sd_folder(root / "sd base", build_unet("tiny", seed=0))
    flagging = save_sd_folder(root / "sd base flagging", build_unet("tiny", seed=0), flag_everything=True)
    return {"base": base, "flagging": flagging, "adapter": upcycled_adapter(base, root / "my adapter")}


@pytest.fixture
def modules_cache(tmp_path, monkeypatch):
    """diffusers copies a folder's custom code to its modules cache: here, not in the user's home."""
    import diffusers.utils.dynamic_modules_utils as dynamic_modules

    monkeypatch.setattr(dynamic_modules, "HF_MODULES_CACHE", str(tmp_path / "hf modules"))


def sample(pipe, task="t2i", **kwargs):
    """One seeded 2-step sample as a (1, H, W, 3) array."""
    pipe.set_progress_bar_config(disable=True)
    if task == "edit":
        kwargs.setdefault("image", np.random.default_rng(0).random((16, 16, 3)).astype(np.float32))
    return pipe(task, PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np",
                **kwargs).images


# ---- save_pretrained and from_pretrained ----

def test_a_saved_pipeline_reloads_alone_to_the_same_images(sd, tmp_path, elsewhere):
    """The folder holds everything: the base and the adapter it was made from are gone when it reloads."""
    base, adapter = tmp_path / "base copy", tmp_path / "adapter copy"
    shutil.copytree(sd["base"], base)
    shutil.copytree(sd["adapter"], adapter)
    pipe = MTUPipeline.from_base(base, adapter)
    pipe.set_sampling_defaults({"t2i": {"guidance_scale": 3.0}})
    saved = pipe.save_pretrained(tmp_path / "saved pipeline")
    index = json.loads((saved / "model_index.json").read_text())
    assert index["unet"] == ["mtu_unet", "SavedMTUModel"] and index["_class_name"] == ["mtu_pipeline", "MTUPipeline"]
    assert {"mtu_config.json", "mtu_model.safetensors", "config.json", "diffusion_pytorch_model.safetensors"} <= {
        path.name for path in (saved / "unet").iterdir()}
    expected = {task: sample(pipe, task) for task in TASKS}
    shutil.rmtree(base)
    shutil.rmtree(adapter)

    reloaded = MTUPipeline.from_pretrained(saved)
    for task in TASKS:
        np.testing.assert_array_equal(sample(reloaded, task), expected[task])
    assert reloaded.task_defaults("t2i").guidance_scale == 3.0  # the sampling defaults came along
    assert reloaded.config.requires_safety_checker and reloaded.safety_checker is not None


@pytest.fixture(scope="module")
def saved_sd(sd, tmp_path_factory):
    """(the pipeline, the folder it saved to)."""
    pipe = MTUPipeline.from_base(sd["base"], sd["adapter"])
    return pipe, pipe.save_pretrained(tmp_path_factory.mktemp("saved") / "saved pipeline")


def test_diffusers_generic_loader_reads_a_saved_folder(saved_sd, elsewhere, modules_cache):
    pipe, saved = saved_sd
    with pytest.raises(ValueError, match="trust_remote_code=True"):  # diffusers' rule for a folder's own code
        DiffusionPipeline.from_pretrained(saved)
    loaded = DiffusionPipeline.from_pretrained(saved, trust_remote_code=True)
    assert type(loaded) is MTUPipeline and loaded.safety_checker is not None
    np.testing.assert_array_equal(sample(loaded, "edit"), sample(pipe, "edit"))


def test_what_diffusers_loaded_saves_again(saved_sd, tmp_path, elsewhere, modules_cache):
    """Its model records the folder's unet/ as its base, where save_pretrained reads the base UNet again."""
    pipe, saved = saved_sd
    again = DiffusionPipeline.from_pretrained(saved, trust_remote_code=True).save_pretrained(tmp_path / "again")
    np.testing.assert_array_equal(sample(MTUPipeline.from_pretrained(again)), sample(pipe))


def test_from_pretrained_still_takes_an_adapter_folder(sd, elsewhere):
    pipe = MTUPipeline.from_pretrained(sd["adapter"], base=sd["base"])
    np.testing.assert_array_equal(sample(pipe), sample(MTUPipeline.from_base(sd["base"], sd["adapter"])))


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    """(an SDXL base folder, an adapter made from its UNet, a pipeline of both, the folder it saved to)."""
    root = tmp_path_factory.mktemp("sdxl made here")
    base = save_sdxl_folder(root / "sdxl base", tiny_sdxl_unet(seed=0))
    adapter = upcycled_adapter(base, root / "sdxl adapter")
    pipe = MTUStableDiffusionXLPipeline.from_base(base, adapter)
    return base, adapter, pipe, pipe.save_pretrained(root / "saved sdxl")


def test_an_sdxl_pipeline_saves_and_reloads(sdxl, elsewhere):
    _, _, pipe, saved = sdxl
    np.testing.assert_array_equal(sample(MTUStableDiffusionXLPipeline.from_pretrained(saved)), sample(pipe))
    with pytest.raises(InputError, match=r"is for a 'sdxl' base, which MTUPipeline cannot run"):
        MTUPipeline.from_pretrained(saved)


def test_diffusers_generic_loader_reads_a_saved_sdxl_folder(sdxl, elsewhere, modules_cache):
    _, _, pipe, saved = sdxl
    loaded = DiffusionPipeline.from_pretrained(saved, trust_remote_code=True)
    assert type(loaded) is MTUStableDiffusionXLPipeline
    np.testing.assert_array_equal(sample(loaded), sample(pipe))


def test_sdxl_takes_no_safety_checker(sdxl):
    base, adapter, _, _ = sdxl
    with pytest.raises(InputError, match=r"`safety_checker` must be None for MTUStableDiffusionXLPipeline: "
                                         r"diffusers' SDXL pipelines have no safety checker, got "
                                         r"StableDiffusionSafetyChecker"):
        MTUStableDiffusionXLPipeline.from_base(base, adapter, safety_checker=tiny_safety_checker())
    assert not hasattr(MTUStableDiffusionXLPipeline.from_base(base, adapter, safety_checker=None), "safety_checker")


def test_save_pretrained_never_writes_over_what_is_not_its_own(sd, tmp_path):
    pipe = MTUPipeline.from_base(sd["base"], sd["adapter"])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match=r"`save_directory` '.*mine' already holds files that save_pretrained "
                                         r"did not write \(such as 'notes.txt'\).*overwrite=True"):
        pipe.save_pretrained(mine)
    assert sorted(path.name for path in mine.iterdir()) == ["notes.txt"]
    pipe.save_pretrained(mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me" and (mine / "unet" / "mtu_config.json").is_file()
    pipe.save_pretrained(mine)  # its own earlier output: no `overwrite` needed
    with pytest.raises(InputError, match=r"`save_directory` '.*sd base' is the base '.*sd base' that the pipeline "
                                         r"reads from"):
        pipe.save_pretrained(sd["base"], overwrite=True)
    with pytest.raises(InputError, match=r"`safe_serialization` must be True: mtu writes weights only as "
                                         r"safetensors, got False"):
        pipe.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    assert not (tmp_path / "pickled").exists()


def test_save_pretrained_refuses_a_model_of_another_base(sd, tmp_path):
    other = mtu.upcycle(build_unet("tiny", seed=1), mtu.MTUConfig(tasks=TASKS, num_experts=4),
                        base_name_or_path=str(sd["base"]))
    pipe = MTUPipeline.from_base(sd["base"], other)
    with pytest.raises(InputError, match=r"the base UNet in '.*sd base' is not the one this pipeline's MTU model "
                                         r"was made from .*nothing was saved"):
        pipe.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved").exists()


# ---- the safety checker ----

def test_the_bases_safety_checker_is_kept_and_run(sd, elsewhere):
    pipe = MTUPipeline.from_base(sd["flagging"], sd["adapter"])
    assert pipe.safety_checker is not None and pipe.feature_extractor is not None
    pipe.set_progress_bar_config(disable=True)
    output = pipe("t2i", PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                  output_type="np")
    assert output.nsfw_content_detected == [True] and not output.images.any()  # black, as diffusers makes it
    images, flagged = pipe("t2i", PROMPT, num_inference_steps=2, output_type="pil", return_dict=False)
    assert flagged == [True] and not np.asarray(images[0]).any()
    assert pipe("t2i", PROMPT, num_inference_steps=2, output_type="latent").nsfw_content_detected is None


def test_safety_checker_none_turns_it_off_with_diffusers_warning(sd, elsewhere):
    with pytest.warns(SafetyCheckerDisabledWarning, match=r"You have disabled the safety checker for MTUPipeline"):
        pipe = MTUPipeline.from_base(sd["flagging"], sd["adapter"], safety_checker=None)
    assert pipe.safety_checker is None and pipe.feature_extractor is not None  # as diffusers loads it
    output = pipe("t2i", PROMPT, num_inference_steps=2, output_type="np")
    assert output.nsfw_content_detected is None and output.images.any()
    with pytest.warns(SafetyCheckerDisabledWarning):
        MTUPipeline.from_pretrained(sd["adapter"], base=sd["flagging"], safety_checker=None)
    checker = tiny_safety_checker()
    assert MTUPipeline.from_base(sd["flagging"], sd["adapter"], safety_checker=checker).safety_checker is checker
    with pytest.raises(InputError, match=r"`safety_checker` must be None or a StableDiffusionSafetyChecker, got str"):
        MTUPipeline.from_base(sd["flagging"], sd["adapter"], safety_checker="off")


def test_a_safety_checker_needs_its_feature_extractor(sd, tmp_path):
    parts = MTUPipeline.from_base(sd["base"], sd["adapter"]).components
    parts.update(safety_checker=tiny_safety_checker(), feature_extractor=None)
    with pytest.raises(InputError, match=r"`feature_extractor` is required with a `safety_checker`"):
        MTUPipeline(**parts)
    parts.update(feature_extractor=tiny_feature_extractor())
    assert MTUPipeline(**parts).safety_checker is parts["safety_checker"]


def test_fold_keeps_the_safety_checker(sd, elsewhere):
    pipe = MTUPipeline.from_base(sd["flagging"], sd["adapter"])
    folded = pipe.fold("t2i")
    assert isinstance(folded, StableDiffusionPipeline) and folded.safety_checker is pipe.safety_checker
    assert folded.config.requires_safety_checker
    output = folded(PROMPT, num_inference_steps=2, output_type="np")
    assert output.nsfw_content_detected == [True]


# ---- fp16-variant bases ----

@pytest.fixture(scope="module")
def fp16(sd, tmp_path_factory):
    """(a copy of the SD base holding only fp16-variant weights, an adapter made from it)."""
    root = tmp_path_factory.mktemp("fp16 made here")
    base = save_fp16_variant_copy(sd["base"], root / "fp16 only base")
    return base, upcycled_adapter(base, root / "fp16 adapter", variant="fp16")


def test_a_base_with_only_fp16_weights_loads_with_variant(fp16, elsewhere):
    base, adapter = fp16
    with pytest.raises(InputError, match=r"`base` '.*fp16 only base': '[^']*' holds only weights of variant 'fp16'; "
                                         r"pass `variant='fp16'`"):
        MTUPipeline.from_base(base, adapter)
    pipe = MTUPipeline.from_base(base, adapter, variant="fp16", torch_dtype=torch.float32)
    assert pipe.text_encoder.dtype == pipe.unet.dtype == torch.float32 and pipe.safety_checker is not None
    np.testing.assert_array_equal(sample(MTUPipeline.from_pretrained(adapter, variant="fp16",
                                                                     torch_dtype=torch.float32)), sample(pipe))


def test_a_pipeline_of_an_fp16_only_base_saves_and_reloads(fp16, tmp_path, elsewhere):
    base, adapter = fp16
    pipe = MTUPipeline.from_base(base, adapter, variant="fp16", torch_dtype=torch.float32)
    saved = pipe.save_pretrained(tmp_path / "saved from fp16")  # the base UNet read again with its variant
    np.testing.assert_array_equal(sample(MTUPipeline.from_pretrained(saved, torch_dtype=torch.float32)),
                                  sample(pipe))


def test_a_variant_the_base_lacks_is_named(sd):
    with pytest.raises(InputError, match=r"`variant` 'fp16': `base` '.*sd base': '[^']*' has no 'fp16' weights; it "
                                         r"holds plain \(no variant\) weights"):
        MTUPipeline.from_base(sd["base"], sd["adapter"], variant="fp16")
    with pytest.raises(InputError, match=r"`variant` must be None or a weights variant name such as 'fp16', "
                                         r"got '../x'"):
        MTUPipeline.from_base(sd["base"], sd["adapter"], variant="../x")
