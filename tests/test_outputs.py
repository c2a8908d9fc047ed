"""Outputs never destroy anything (issue 13, point 7): every writing command claims its output with
`mtu.outputs.claim_output` before any work. An existing folder that is not the command's own earlier output is
refused unless `--overwrite`, and even then only the command's own files are replaced; an existing file is refused,
not renamed; an output that is, holds or lies inside one of the command's inputs is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import yaml

import mtu
from mtu import outputs
from mtu.cli import main
from mtu.errors import InputError
from mtu.outputs import MARKER_NAME, claim_output, read_marker

from .test_pipeline_mtu import one_thread  # noqa: F401 (autouse fixture)
from .training_parts import tiny_pipeline_folder, tiny_run_config

TINY = ["--base", "random:tiny", "--tasks", "t2i,edit", "--experts", "2"]


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes)."""
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file()}


def users_folder(folder: Path) -> Path:
    """A folder of someone's own files, a subfolder included."""
    (folder / "notes").mkdir(parents=True)
    (folder / "thesis.txt").write_text("four years of work")
    (folder / "notes" / "monday.txt").write_text("buy milk")
    return folder


def writer(files: dict[str, str]):
    def write(folder: Path) -> None:
        for name, text in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
    return write


def one_line_error(capsys, argv) -> str:
    """Runs the command line; it must fail with exit 2 and one `mtu: error:` line, which is returned."""
    capsys.readouterr()  # what came before (progress bars of the setup)
    code = main([str(arg) for arg in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err, err
    assert err.startswith("mtu: error: "), err
    return err


# ---- claim_output and OutputFolder ----

def test_a_new_folder_is_written_whole_and_marked(tmp_path):
    output = claim_output(tmp_path / "out", command="fold")
    assert not (tmp_path / "out").exists()  # claiming only looks
    output.write(writer({"config.json": "{}", "sub/weights.bin": "w"}))
    assert files_of(tmp_path / "out") == {MARKER_NAME: (tmp_path / "out" / MARKER_NAME).read_bytes(),
                                          "config.json": b"{}", "sub/weights.bin": b"w"}
    assert read_marker(tmp_path / "out") == {"command": "fold", "files": ["config.json", "sub/weights.bin"]}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]  # no staging left


def test_a_folder_of_other_files_is_refused_and_left_as_it_was(tmp_path):
    folder = users_folder(tmp_path / "mine")
    before = files_of(folder)
    with pytest.raises(InputError, match=r"^--out: '.*mine' already holds files that are not an earlier `mtu fold` "
                                         r"output \(such as 'notes'\); .* pass --overwrite"):
        claim_output(folder, command="fold")
    (tmp_path / "adapter").mkdir()
    claim_output(tmp_path / "adapter", command="upcycle").write(writer({"a": "1"}))
    with pytest.raises(InputError, match="not an earlier `mtu fold` output"):  # another command's output
        claim_output(tmp_path / "adapter", command="fold")
    assert files_of(folder) == before


def test_an_existing_file_is_refused_not_renamed(tmp_path):
    (tmp_path / "report.pdf").write_bytes(b"%PDF")
    with pytest.raises(InputError, match=r"^--out: '.*report.pdf' is an existing file; `mtu fold` writes a folder"):
        claim_output(tmp_path / "report.pdf", command="fold", overwrite=True)
    assert files_of(tmp_path) == {"report.pdf": b"%PDF"}  # no hidden .report.pdf.*.old beside it


def test_its_own_earlier_output_is_replaced_keeping_the_users_files(tmp_path):
    claim_output(tmp_path / "out", command="fold").write(writer({"a.txt": "1", "sub/old.txt": "2"}))
    (tmp_path / "out" / "mine.txt").write_text("added by the user")
    claim_output(tmp_path / "out", command="fold").write(writer({"a.txt": "3", "b.txt": "4"}))
    found = files_of(tmp_path / "out")
    # its earlier sub/old.txt is gone (and the folder it emptied), the user's file stays
    assert {name: found[name] for name in found if name != MARKER_NAME} == {
        "a.txt": b"3", "b.txt": b"4", "mine.txt": b"added by the user"}
    assert not (tmp_path / "out" / "sub").exists()


def test_overwrite_replaces_only_the_commands_files(tmp_path):
    folder = users_folder(tmp_path / "mine")
    (folder / "config.json").write_text("the user's")
    before = files_of(folder)
    claim_output(folder, command="fold", overwrite=True).write(writer({"config.json": "ours", "w.bin": "w"}))
    after = files_of(folder)
    assert after["config.json"] == b"ours" and after["w.bin"] == b"w"
    assert {name: after[name] for name in before if name != "config.json"} == {
        name: before[name] for name in before if name != "config.json"}
    # the user's files are not the command's: a later run does not remove them either
    claim_output(folder, command="fold").write(writer({"w.bin": "again"}))
    assert files_of(folder)["thesis.txt"] == b"four years of work" and not (folder / "config.json").exists()


@pytest.mark.parametrize("out, relation", [("adapter", "is"), ("adapter/folded", "lies inside"), (".", "contains")])
def test_output_and_input_may_not_overlap(tmp_path, monkeypatch, out, relation):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "mtu_model.safetensors").write_bytes(b"weights")
    with pytest.raises(InputError, match=rf"^--out: '{out}' {relation} the input adapter 'adapter' that `mtu fold` "
                                         rf"reads; .* Choose another place"):
        claim_output(out, command="fold", overwrite=True, inputs={"input adapter": "adapter", "base": None,
                                                                  "hub base": "org/name"})
    assert files_of(tmp_path / "adapter") == {"mtu_model.safetensors": b"weights"}


def test_a_place_that_cannot_be_written_is_refused_before_any_work(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=r"^--out: '.*file/out' cannot be created: '.*file' is a file, not a"):
        claim_output(tmp_path / "file" / "out", command="demo")
    # a read-only folder (simulated: the check asks access(2), which says so for a read-only file system too)
    monkeypatch.setattr(outputs.os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(InputError, match=r"^--out: '.*new' cannot be written: no write permission in"):
        claim_output(tmp_path / "new", command="demo")


def test_a_name_in_the_way_stops_the_merge_before_anything_moves(tmp_path):
    folder = users_folder(tmp_path / "mine")
    (folder / "report.html").mkdir()  # a folder where the command writes a file
    before = files_of(folder)
    output = claim_output(folder, command="demo", overwrite=True)
    with pytest.raises(InputError, match=r"cannot write 'report.html' into '.*mine': .* is in the way"):
        output.write(writer({"metrics.json": "{}", "report.html": "<html>"}))
    assert files_of(folder) == before and sorted(path.name for path in tmp_path.iterdir()) == ["mine"]


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    claim_output(tmp_path / "out", command="fold").write(writer({"a.txt": "1"}))
    before = files_of(tmp_path / "out")

    def broken(folder):
        (folder / "a.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        claim_output(tmp_path / "out", command="fold").write(broken)
    assert files_of(tmp_path / "out") == before and sorted(path.name for path in tmp_path.iterdir()) == ["out"]


# ---- the commands ----

def test_upcycle_refuses_a_trained_adapter_and_an_existing_file(tmp_path, capsys):
    trained = tmp_path / "run" / "final"
    mtu.upcycle(mtu.load_base_unet("random:tiny"), mtu.MTUConfig(tasks=["t2i"], num_experts=2)).save_pretrained(
        trained)  # as the trainer writes its final/ (not an `mtu upcycle` output)
    before = files_of(trained)
    err = one_line_error(capsys, ["upcycle", *TINY, "--out", trained])
    assert f"--out: '{trained}' already holds files that are not an earlier `mtu upcycle` output" in err
    assert files_of(trained) == before
    (tmp_path / "notes.txt").write_text("mine")
    err = one_line_error(capsys, ["upcycle", *TINY, "--out", tmp_path / "notes.txt", "--overwrite"])
    assert "is an existing file; `mtu upcycle` writes a folder" in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt", "run"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_upcycle_rewrites_its_own_output_and_keeps_the_users_files(tmp_path, capsys):
    assert main(["upcycle", *TINY, "--out", str(tmp_path / "a")]) == 0
    assert main(["upcycle", *TINY, "--seed", "1", "--out", str(tmp_path / "a")]) == 0  # its own: no flag needed
    folder = users_folder(tmp_path / "mine")
    assert main(["upcycle", *TINY, "--out", str(folder), "--overwrite"]) == 0
    assert (folder / "thesis.txt").read_text() == "four years of work" and mtu.load_mtu(folder).task_names == [
        "t2i", "edit"]
    assert read_marker(folder)["command"] == "upcycle"


def test_fold_never_deletes_its_adapter_or_the_users_files(tmp_path, capsys):
    adapter = tmp_path / "adapter"
    assert main(["upcycle", *TINY, "--out", str(adapter)]) == 0
    before = files_of(adapter)
    err = one_line_error(capsys, ["fold", adapter, "--task", "edit", "--out", adapter, "--overwrite"])
    assert "--out" in err and str(adapter) in err
    assert files_of(adapter) == before
    folder = users_folder(tmp_path / "mine")
    err = one_line_error(capsys, ["fold", adapter, "--task", "edit", "--out", folder])
    assert "already holds files that are not an earlier `mtu fold` output" in err
    assert main(["fold", str(adapter), "--task", "edit", "--out", str(folder), "--overwrite"]) == 0
    assert (folder / "thesis.txt").read_text() == "four years of work" and (folder / "notes" / "monday.txt").exists()
    assert (folder / "config.json").is_file() and files_of(adapter) == before


def test_demo_refuses_a_users_folder_before_any_work(tmp_path, capsys, monkeypatch):
    from mtu import demo

    monkeypatch.setattr(demo, "build_report", lambda *args: pytest.fail("the demo ran anyway"))
    folder = users_folder(tmp_path / "home")
    monkeypatch.chdir(folder)
    before = files_of(folder)
    err = one_line_error(capsys, ["demo", "--out", str(folder)])  # `mtu demo --out "$PWD"`
    assert "already holds files that are not an earlier `mtu demo` output" in err
    (folder / "base").mkdir()
    (folder / "base" / "model_index.json").write_text("{}")
    before = files_of(folder)
    err = one_line_error(capsys, ["demo", "--out", folder / "base", "--base", folder / "base"])
    assert "--out" in err and "is the base (`--base`)" in err
    assert files_of(folder) == before


def test_demo_with_overwrite_keeps_the_users_files(tmp_path, capsys, monkeypatch):
    from mtu import demo

    def fake_report(config, base, staging, start):  # the real one is tests/test_demo.py's
        writer({"report.html": "<html>", "metrics.json": "{}", "gallery/t2i.png": "png"})(staging)
        return [], None

    monkeypatch.setattr(demo, "build_report", fake_report)
    folder = users_folder(tmp_path / "home")
    (folder / "report.html").write_text("the user's own report")
    assert main(["demo", "--out", str(folder), "--overwrite"]) == 0
    found = files_of(folder)
    assert found["report.html"] == b"<html>" and found["thesis.txt"] == b"four years of work"
    assert "notes/monday.txt" in found and sorted(path.name for path in tmp_path.iterdir()) == ["home"]
    assert main(["demo", "--out", str(folder)]) == 0  # now it is the demo's own earlier output too


def test_selfcheck_keeps_the_users_files(tmp_path, capsys):
    from mtu.selfcheck import run_selfcheck

    folder = users_folder(tmp_path / "mine")
    err = one_line_error(capsys, ["selfcheck", "--arch", "tiny", "--out", folder])
    assert "not an earlier `mtu selfcheck` output" in err
    assert run_selfcheck(str(folder), "tiny", latent=8, overwrite=True) == 0
    assert (folder / "thesis.txt").read_text() == "four years of work"
    assert (folder / "report.json").is_file() and (folder / "adapter" / "mtu_config.json").is_file()


def test_cache_refuses_a_users_folder_and_its_own_data(tmp_path, capsys, monkeypatch):
    from mtu.training import cache, config_from_dict

    config = config_from_dict(tiny_run_config(tmp_path))
    monkeypatch.setattr(cache, "load_frozen_parts", lambda base: pytest.fail("the models were loaded anyway"))
    folder = users_folder(tmp_path / "mine")
    with pytest.raises(InputError, match="not an earlier `mtu cache` output"):
        cache.build_cache(config, folder)
    with pytest.raises(InputError, match=r"lies inside the data source \(`data\[0\].path`\)"):
        cache.build_cache(config, tmp_path / "t2i" / "cache", overwrite=True)
    assert (tmp_path / "t2i" / "cache").exists() is False


def test_cache_with_overwrite_keeps_the_users_files(tmp_path):
    from mtu.training import config_from_dict
    from mtu.training.cache import build_cache

    config = config_from_dict(tiny_run_config(tmp_path))
    folder = users_folder(tmp_path / "mine")
    build_cache(config, folder, overwrite=True)
    assert (folder / "thesis.txt").read_text() == "four years of work" and (folder / "manifest.json").is_file()
    build_cache(config, folder)  # its own earlier cache


def fake_run(folder: Path) -> Path:
    """A finished run's layout (config.yaml, final/ adapter) for the packaging checks, which run before scoring."""
    mtu.upcycle(mtu.load_base_unet("random:tiny"), mtu.MTUConfig(tasks=["t2i", "edit"], num_experts=2)
                ).save_pretrained(folder / "final")
    (folder / "config.yaml").write_text(yaml.safe_dump({"max_steps": 2}))
    return folder


def test_package_refuses_a_users_folder_and_its_own_run(tmp_path, monkeypatch):
    from mtu.toyworld import packaging

    monkeypatch.setattr(mtu.upcycling, "load_mtu", lambda *args: pytest.fail("scored anyway"))
    run = fake_run(tmp_path / "run")
    folder = users_folder(tmp_path / "mine")
    with pytest.raises(InputError, match="not an earlier `mtu toyworld package` output"):
        packaging.package_model(run, out=folder)
    with pytest.raises(InputError, match=r"'.*run/packaged' lies inside the run \(`--run`\)"):
        packaging.package_model(run, out=run / "packaged", overwrite=True)
    assert sorted(path.name for path in run.iterdir()) == ["config.yaml", "final"]


def test_pretrain_refuses_its_own_starting_model_and_a_users_folder(tmp_path, capsys, monkeypatch):
    from mtu.toyworld import pretrain
    from mtu.toyworld.components import shipped_base

    monkeypatch.setattr(pretrain, "make_scenes", lambda *args: pytest.fail("trained anyway"))
    base = shipped_base()
    with pytest.raises(InputError, match=r"^--out: '.*' is the model \(`init_from`\)"):
        pretrain.pretrain(pretrain.PretrainConfig(out=str(base), init_from=str(base), device="cpu"), overwrite=True)
    folder = users_folder(tmp_path / "mine")
    err = one_line_error(capsys, ["toyworld", "pretrain", "--out", folder, "--device", "cpu"])
    assert "not an earlier `mtu toyworld pretrain` output" in err


def test_generate_replaces_only_its_own_png(tmp_path, capsys):
    base = tiny_pipeline_folder(tmp_path)
    adapter = tmp_path / "adapter"
    mtu.upcycle(mtu.load_base_unet(str(base)), mtu.MTUConfig(tasks=["t2i", "edit"], num_experts=2)
                ).save_pretrained(adapter)
    photo = tmp_path / "photo.png"
    PIL.Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(photo)
    before = photo.read_bytes()
    command = ["generate", "--model", adapter, "--task", "t2i", "--prompt", "a red square", "--steps", "1"]
    err = one_line_error(capsys, [*command, "--out", photo])
    assert f"--out: '{photo}' already exists and is not an earlier `mtu generate` output" in err
    err = one_line_error(capsys, ["generate", "--model", adapter, "--task", "edit", "--prompt", "make it blue",
                                  "--image", photo, "--out", photo, "--overwrite"])
    assert "is the input image (`--image`)" in err and photo.read_bytes() == before
    out = tmp_path / "out.png"
    assert main([str(arg) for arg in [*command, "--out", out]]) == 0
    assert main([str(arg) for arg in [*command, "--seed", "1", "--out", out]]) == 0  # its own: replaced
    assert main([str(arg) for arg in [*command, "--out", photo, "--overwrite"]]) == 0
    assert photo.read_bytes() != before


def test_train_refuses_a_users_folder_and_resumes_its_own_run(tmp_path, capsys):
    config = tiny_run_config(tmp_path, max_steps=2, checkpoint_every=1)
    path = tmp_path / "run.yaml"
    folder = users_folder(tmp_path / "mine")
    path.write_text(yaml.safe_dump(dict(config, output_dir=str(folder))))
    err = one_line_error(capsys, ["train", "--config", path])
    assert f"output_dir: '{folder}' already holds files that are not an earlier `mtu train` output" in err
    assert main(["train", "--config", str(path), "--overwrite"]) == 0
    assert (folder / "thesis.txt").read_text() == "four years of work" and (folder / "final").is_dir()
    # its own run resumes (resume auto), with or without the marker (runs from before markers)
    (folder / MARKER_NAME).unlink()
    capsys.readouterr()
    assert main(["train", "--config", str(path), "--resume", "auto"]) == 0
    assert "nothing to do: the run is already at step 2" in capsys.readouterr().out
    assert json.loads((folder / "train_summary.json").read_text())["steps"] == 2
