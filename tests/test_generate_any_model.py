"""Every trained method's output is usable (issue 14.5): `mtu generate` and the pipeline run an MTU run's final/,
a `full`, `lora` or `ia3` run's final/, a run folder, and a training checkpoint, from another working directory."""

import numpy as np
import pytest
import torch
from PIL import Image

from mtu.cli import main
from mtu.pipelines import MTUPipeline
from mtu.training import config_from_dict, train
from mtu.training.export import export_checkpoint, model_from_checkpoint
from mtu.training.methods import load_baseline, trainable_parameters

from .training_parts import tiny_run_config


def _run(root, method: str, name: str | None = None, **overrides):
    folder = root / f"run-{name or method}"
    config = tiny_run_config(root, model={"method": method}, max_steps=2, checkpoint_every=1,
                             output_dir=str(folder), **overrides)
    train(config_from_dict(config))
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    made = {method: _run(root, method) for method in ("mtu", "full", "lora", "ia3")}
    made["mtu-ema"] = _run(root, "mtu", "mtu-ema", ema_decay=0.5)
    return made


def _png(folder, name="in.png"):
    path = folder / name
    Image.fromarray(np.full((16, 16, 3), 120, dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("method", ["full", "lora", "ia3"])
def test_generate_runs_a_baseline_final_folder(runs, elsewhere, method):
    out = elsewhere / f"{method}.png"
    code = main(["generate", "--model", str(runs[method] / "final"), "--task", "edit", "--prompt", "make it red",
                 "--image", str(_png(elsewhere)), "--steps", "2", "--out", str(out)])
    assert code == 0 and Image.open(out).size == (16, 16)


def test_generate_runs_a_run_folder_as_its_final(runs, elsewhere):
    out = elsewhere / "run.png"
    assert main(["generate", "--model", str(runs["mtu"]), "--task", "t2i", "--prompt", "a red square",
                 "--steps", "2", "--out", str(out)]) == 0
    reference = elsewhere / "final.png"
    assert main(["generate", "--model", str(runs["mtu"] / "final"), "--task", "t2i", "--prompt", "a red square",
                 "--steps", "2", "--out", str(reference)]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(reference)))


@pytest.mark.parametrize("run", ["mtu", "mtu-ema", "lora"])
def test_a_checkpoint_is_the_model_final_holds(runs, run):
    """The last checkpoint rebuilt is what final/ holds: the EMA weights when the run keeps an EMA (the run's
    weights moved off their init, so a wrong copy would show)."""
    last = sorted((runs[run] / "checkpoints").glob("checkpoint-*"))[-1]
    model = model_from_checkpoint(last)
    if run.startswith("mtu"):
        from mtu import load_mtu

        final = load_mtu(runs[run] / "final")
        expected = dict(final.mtu_named_parameters())
        found = dict(model.mtu_named_parameters())
    else:
        final = load_baseline(runs[run] / "final")
        expected, found = trainable_parameters(final), dict(model.named_parameters())
    moved = 0.0
    for name, tensor in expected.items():
        torch.testing.assert_close(found[name], tensor, rtol=0, atol=0)
    if run == "mtu-ema":  # EMA and last-step weights differ, and the checkpoint gives the EMA ones by default
        last_step = dict(model_from_checkpoint(last, ema=False).mtu_named_parameters())
        moved = max((last_step[name] - tensor).abs().max().item() for name, tensor in expected.items())
        assert moved > 0


def test_generate_runs_a_checkpoint_from_another_folder(runs, elsewhere):
    checkpoint = sorted((runs["mtu"] / "checkpoints").glob("checkpoint-*"))[0]
    out = elsewhere / "checkpoint.png"
    assert main(["generate", "--model", str(checkpoint), "--task", "edit", "--prompt", "make it blue",
                 "--image", str(_png(elsewhere)), "--steps", "2", "--out", str(out)]) == 0
    exported = export_checkpoint(checkpoint, elsewhere / "exported")
    pipe = MTUPipeline.from_pretrained(exported)
    direct = MTUPipeline.from_base(pipe_base(runs), model_from_checkpoint(checkpoint))
    kwargs = dict(prompt="make it blue", image=Image.open(_png(elsewhere)), num_inference_steps=2, output_type="np")
    a = pipe("edit", generator=torch.Generator().manual_seed(0), **kwargs).images
    b = direct("edit", generator=torch.Generator().manual_seed(0), **kwargs).images
    np.testing.assert_array_equal(a, b)


def pipe_base(runs) -> str:
    import yaml

    return yaml.safe_load((runs["mtu"] / "config.yaml").read_text())["model"]["base"]


def test_an_unfinished_run_folder_points_to_its_checkpoints(runs, tmp_path, capsys):
    run = tmp_path / "unfinished"
    run.mkdir()
    (run / "config.yaml").write_text((runs["mtu"] / "config.yaml").read_text())
    code = main(["generate", "--model", str(run), "--task", "t2i", "--prompt", "x", "--out", str(tmp_path / "o.png")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a training run without final/" in err[0] and "checkpoint-N" in err[0]


@pytest.mark.parametrize("run, model", [("lora", "final"), ("full", "final"), ("mtu", "checkpoint"),
                                        ("ia3", "run")])
def test_fold_takes_every_trained_model(runs, elsewhere, run, model):
    """`mtu fold` of a baseline's final/ (the task's adapter merged), a checkpoint, or a run folder: a stock UNet
    whose output is the trained model's for that task."""
    from diffusers import UNet2DConditionModel

    folder = {"final": runs[run] / "final", "run": runs[run],
              "checkpoint": sorted((runs[run] / "checkpoints").glob("checkpoint-*"))[-1]}[model]
    out = elsewhere / "folded"
    assert main(["fold", str(folder), "--task", "edit", "--out", str(out)]) == 0
    folded = UNet2DConditionModel.from_pretrained(out)
    trained = model_from_checkpoint(folder) if model == "checkpoint" else load_baseline(
        runs[run] / "final") if run != "mtu" else None
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 8, folded.config.sample_size, folded.config.sample_size, generator=generator)
    text = torch.randn(2, 7, folded.config.cross_attention_dim, generator=generator)
    t = torch.tensor([100, 700])
    with torch.no_grad():
        expected = trained(sample, t, text, task="edit").sample
        torch.testing.assert_close(folded(sample, t, text).sample, expected, rtol=1e-4, atol=1e-5)
