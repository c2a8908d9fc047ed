"""Bookkeeping of the edit diagnosis scripts (issue 11): the region masks and full references of the one-change
rows, and the cross-attention probe's measurements on attention maps with known answers."""

import numpy as np
import pytest
import torch

from mtu.toyworld.scene import Scene, Shape, shape_mask
from mtu.toyworld.tasks import Edit

from .scripts import load_benchmark

CIRCLE = Shape("circle", "red", "small", "top left")
SQUARE = Shape("square", "blue", "large", "center")
SCENE = Scene("gray", (CIRCLE, SQUARE))


@pytest.fixture(scope="module")
def diagnosis():
    return load_benchmark("edit_diagnosis")


def test_edit_region_covers_exactly_the_changed_cells(diagnosis):
    removal = Edit("remove", "remove the circle", SCENE, Scene("gray", (SQUARE,)), CIRCLE)
    region = np.asarray(diagnosis.edit_region(removal)) > 0
    assert region[:10, :10].all() and region.sum() == 11 * 11  # the top-left cell (32 / 3 px, rounded up)
    assert not (region & shape_mask(SQUARE)).any()
    moved = Shape("circle", "red", "small", "bottom right")
    move = Edit("move", "move the circle to the bottom right", SCENE, Scene("gray", (SQUARE, moved)), CIRCLE)
    region = np.asarray(diagnosis.edit_region(move)) > 0
    assert region[:10, :10].all() and region[-10:, -10:].all() and region.sum() == 2 * 11 * 11
    background = Edit("background", "change the background to white", SCENE, Scene("white", SCENE.shapes))
    assert (np.asarray(diagnosis.edit_region(background)) == 255).all()


def test_full_reference_names_colour_kind_and_cell(diagnosis):
    assert diagnosis._full_reference(SCENE, CIRCLE) == "the red circle at the top left"
    with pytest.raises(ValueError, match="shape"):
        diagnosis._full_reference(SCENE, Shape("triangle", "red", "small", "top"))


def test_refer_position_row_keeps_the_edits_and_names_them_in_full(diagnosis):
    from mtu.toyworld.evaluate import evaluation_set

    examples = evaluation_set("edit", 12)
    renamed = diagnosis.row_examples("mtu-refer-position", examples)
    assert [ex.edit.after for ex in renamed] == [ex.edit.after for ex in examples]
    for old, new in zip(examples, renamed):
        if old.edit.shape is not None and old.edit.kind != "add":
            assert diagnosis._full_reference(old.edit.before, old.edit.shape) in new.prompt


def test_layer_rows_measure_entropy_and_the_named_shape():
    probe = load_benchmark("cross_attention_probe")
    batch, heads, tokens = 2, 2, 77
    named = np.zeros((batch, 8, 8))
    named[:, 0, 0] = 1.0
    others = np.zeros((batch, 8, 8))
    others[:, 7, 7] = 1.0
    uniform = torch.full((batch * heads, 64, tokens), 1 / tokens)
    peaked = uniform.clone().reshape(batch, heads, 64, tokens)
    peaked[:, :, 0, 5] += 0.5  # token 5 at pixel (0, 0), the named shape's
    peaked = peaked.reshape(batch * heads, 64, tokens)
    recorder = type("Recorder", (), {})()
    recorder.probs = {"flat": uniform, "peaked": peaked, "coarse": torch.full((batch * heads, 16, tokens), 1 / 77)}
    rows = {row["layer"]: row for row in probe.layer_rows(recorder, batch, [5, 5], named, others)}
    assert set(rows) == {"flat", "peaked"}  # the 4x4 level is skipped
    assert rows["flat"]["entropy"] == pytest.approx(np.log(tokens), rel=1e-5)
    assert rows["flat"]["ratio"] == pytest.approx(1.0) and rows["flat"]["named_more"] == 0.0
    assert rows["peaked"]["ratio"] == pytest.approx((1 / 77 + 0.5) / (1 / 77))
    assert rows["peaked"]["named_more"] == 1.0


def test_change_weights_mark_the_latent_pixels_of_the_removed_shape(diagnosis):
    from mtu.toyworld.scene import render

    def signed(scene):
        return torch.tensor(np.asarray(render(scene, 32)), dtype=torch.float32).permute(2, 0, 1)[None] / 127.5 - 1

    removal = Scene("gray", (SQUARE,))
    weights = diagnosis.change_weights(signed(SCENE), signed(removal), 8, 10.0)
    circle = torch.nn.functional.adaptive_max_pool2d(torch.tensor(shape_mask(CIRCLE), dtype=torch.float32)[None, None], 8)
    assert weights.shape == (1, 1, 8, 8)
    assert torch.equal(weights, 1 + 9 * circle)  # 10 exactly on the latent pixels the circle touches, 1 elsewhere
    assert 0 < int((weights == 10).sum()) < 16
    assert torch.equal(diagnosis.change_weights(signed(SCENE), signed(SCENE), 8, 10.0), torch.ones(1, 1, 8, 8))


def test_sampling_probe_pairs_each_setting_with_the_first(capsys):
    probe = load_benchmark("edit_sampling_probe")
    first = np.array([True, True, False, False, False])
    other = np.array([True, False, True, True, False])  # 2 only here, 1 only in the first
    probe.print_paired({(20, 3.0, 1.5): first, (20, 1.0, 1.0): other})
    row = capsys.readouterr().out.strip().splitlines()[-1]
    assert row.startswith("| 20 | 1.0 | 1.0 | +0.200 (") and "| 2 / 1 | 1.000 |" in row


def test_sampling_probe_refuses_malformed_pairs(capsys):
    probe = load_benchmark("edit_sampling_probe")
    with pytest.raises(SystemExit):
        probe.main(["ADAPTER", "--pairs", "3:1.5,7"])
    assert "--pairs" in capsys.readouterr().err


@pytest.mark.parametrize("arguments", [["--kind", "repaint"], ["--task", "inpaint", "--kind", "recolour"]])
def test_sampling_probe_refuses_a_kind_it_cannot_filter_on(capsys, arguments):
    probe = load_benchmark("edit_sampling_probe")
    with pytest.raises(SystemExit):
        probe.main(["ADAPTER", *arguments])
    assert "--kind" in capsys.readouterr().err


def test_recolour_word_probe_reads_the_colour_under_the_named_shape_and_swaps_only_the_word():
    from mtu.toyworld.evaluate import Example
    from mtu.toyworld.scene import render

    probe = load_benchmark("recolour_word_probe")
    target = Scene("gray", (CIRCLE, Shape("square", "green", "large", "center")))
    assert probe.read_colour(render(target), SQUARE) == "green"
    assert probe.read_colour(render(Scene("gray", (CIRCLE,))), SQUARE) == "gray"  # the shape is gone
    edit = Edit("recolour", "make the square green", SCENE, target, SQUARE)
    example = Example("edit", edit.instruction, render(SCENE), render(target), target, edit)
    variants = probe.colour_variants(example)
    words = [variant.prompt.rsplit(" ", 1)[1] for variant in variants]
    assert words == ["red", "green", "yellow", "purple", "white", "black"]  # not blue (its own), gray is no shape colour
    for word, variant in zip(words, variants):
        assert variant.prompt == f"make the square {word}" == variant.edit.instruction
        assert variant.target_scene == variant.edit.after
        assert {shape.colour for shape in variant.target_scene.shapes if shape.kind == "square"} == {word}
        assert variant.edit.before == SCENE and variant.image is example.image


def test_recolour_word_probe_tally_separates_reading_the_word_from_ignoring_it():
    probe = load_benchmark("recolour_word_probe")
    follows = [[(word, word, "blue", "gray") for word in ("red", "green", "black")]]
    ignores = [[(word, "blue", "blue", "gray") for word in ("red", "green", "black")]]
    counts = probe.tally(follows)
    assert (counts["asked"], counts["original"], counts["chance"], counts["distinct"]) == (3, 0, 0.0, 3.0)
    counts = probe.tally(ignores)
    assert (counts["asked"], counts["original"], counts["chance"], counts["distinct"]) == (0, 3, 0.0, 1.0)
    always_red = [[(word, "red", "blue", "gray") for word in ("red", "green", "black")]]
    counts = probe.tally(always_red)  # right once, by luck: exactly what chance says
    assert counts["asked"] == 1 and counts["chance"] == pytest.approx(2 / 6) and counts["other"] == 2


def test_generate_outputs_seeds_each_example_by_its_index_in_the_whole_set():
    from mtu.toyworld.evaluate import evaluation_set, generate_outputs

    seeds = []

    class RecordingPipe:
        def __call__(self, generator, **kwargs):
            seeds.extend(g.initial_seed() for g in generator)
            return type("Output", (), {"images": [None] * len(generator)})()

    examples = evaluation_set("edit", 6, split="validation")
    generate_outputs(RecordingPipe(), examples, seed=1, batch_size=4)
    whole = list(seeds)
    seeds.clear()
    generate_outputs(RecordingPipe(), [examples[1], examples[4], examples[4]], seed=1, indices=[1, 4, 4],
                     batch_size=2)
    assert seeds == [whole[1], whole[4], whole[4]] and len(set(whole)) == 6
    with pytest.raises(ValueError, match="indices"):
        generate_outputs(RecordingPipe(), examples, indices=[0])


def test_region_row_passes_each_edit_region_as_mask_with_the_whole_sets_seeds(diagnosis):
    from contextlib import ExitStack
    from unittest import mock

    from mtu.toyworld import evaluate

    calls = []

    class RecordingPipe:
        def __call__(self, generator, **kwargs):
            calls.append(([g.initial_seed() for g in generator], kwargs))
            return type("Output", (), {"images": [None] * len(generator)})()

    examples = evaluate.evaluation_set("edit", 5, split="validation")
    evaluate.generate_outputs(RecordingPipe(), examples, seed=2, batch_size=2)
    plain = [seed for seeds, _ in calls for seed in seeds]
    calls.clear()
    with ExitStack() as stack:
        for module, name, value in diagnosis.row_patches("mtu-region"):
            stack.enter_context(mock.patch.object(module, name, value))
        evaluate.generate_outputs(RecordingPipe(), examples, seed=2, batch_size=2, image_guidance_scale=1.5)
        assert [seed for seeds, _ in calls for seed in seeds] == plain
        calls.clear()
        evaluate.generate_outputs(RecordingPipe(), [examples[3], examples[1]], seed=2, indices=[3, 1])
        assert calls[0][0] == [plain[3], plain[1]] and "indices" not in calls[0][1]
        calls.clear()
        evaluate.generate_outputs(RecordingPipe(), examples, seed=2, batch_size=2, image_guidance_scale=1.5)
    masks = [mask for _, kwargs in calls for mask in kwargs["mask_image"]]
    assert [np.asarray(mask).tolist() for mask in masks] == [
        np.asarray(diagnosis.edit_region(example.edit)).tolist() for example in examples]
    assert all("image_guidance_scale" not in kwargs and kwargs["task"] == "edit" for _, kwargs in calls)


@pytest.mark.parametrize("arguments, named", [
    (["--steps", "0"], "--steps"),
    (["--adapter", "no-such-folder"], "--adapter"),
    (["--adapter", "src/mtu/toyworld/mtu_model", "--rows", "mtu,full"], "--adapter"),
])
def test_diagnosis_refuses_bad_adapter_arguments_before_any_work(diagnosis, capsys, arguments, named):
    from mtu.toyworld.components import shipped_base

    shipped_adapter = str(shipped_base().parent / "mtu_model")
    arguments = [shipped_adapter if value == "src/mtu/toyworld/mtu_model" else value for value in arguments]
    with pytest.raises(SystemExit):
        diagnosis.main(arguments)
    assert named in capsys.readouterr().err


@pytest.mark.parametrize("row", ["mtu-recolour", "mtu-copy", "mtu-caption"])
def test_diagnosis_rows_change_the_training_pairs_and_not_the_held_out_edits(diagnosis, row):
    from contextlib import ExitStack
    from unittest import mock

    from mtu.tasks.base import task_plugin
    from mtu.toyworld.evaluate import evaluation_set
    from mtu.toyworld.scene import make_scenes

    scenes = make_scenes(0, 24, "train")
    plain = [task_plugin("edit").toy_pair(scene, 32, np.random.default_rng(i)) for i, scene in enumerate(scenes)]
    held_out = [example.prompt for example in evaluation_set("edit", 16)]
    with ExitStack() as stack:
        for module, name, value in diagnosis.row_patches(row):
            stack.enter_context(mock.patch.object(module, name, value))
        pairs = [task_plugin("edit").toy_pair(scene, 32, np.random.default_rng(i)) for i, scene in enumerate(scenes)]
        assert [example.prompt for example in evaluation_set("edit", 16)] == held_out
    if row == "mtu-recolour":
        assert all(pair["prompt"].startswith("make ") for pair in pairs)
        assert not all(pair["prompt"].startswith("make ") for pair in plain)
    elif row == "mtu-copy":
        assert all(pair["prompt"] == "" and pair["target"] is pair["condition"] for pair in pairs)
    else:
        assert [pair["prompt"] for pair in pairs] == [pair["output_caption"] for pair in plain]
    assert task_plugin("edit").toy_pair(scenes[0], 32, np.random.default_rng(0))["prompt"] == plain[0]["prompt"]


def test_recolour_word_probe_intervals_resample_whole_examples():
    probe = load_benchmark("recolour_word_probe")
    low, high = probe.pooled_interval([5, 5, 5], [5, 5, 5])
    assert low == high == 1.0
    low, high = probe.pooled_interval([6, 0], [6, 6])  # one example always right, one never: 0, 0.5 or 1
    assert low == 0.0 and high == 1.0
    low, high = probe.pooled_interval([3] * 40 + [0] * 40, [6] * 80)
    assert 0.15 < low < 0.25 < high < 0.35


def test_diagnosis_scores_an_adapter_untrained_with_steps_0(diagnosis, tmp_path, capsys):
    import json

    from mtu.toyworld.components import shipped_base

    adapter = str(shipped_base().parent / "mtu_model")
    assert diagnosis.main(["--rows", "mtu-recolour", "--adapter", adapter, "--steps", "0", "--eval-count", "2",
                           "--threads", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "diagnosis.json").read_text())["results"][0]
    assert result["steps"] == 0 and result["kinds"] == ["recolour", "recolour"]
    assert not (tmp_path / "run-mtu-recolour").exists()  # nothing trained


def test_recolour_word_probe_refuses_malformed_pairs_and_counts(capsys):
    probe = load_benchmark("recolour_word_probe")
    for arguments, named in ((["--pairs", "3"], "--pairs"), (["--count", "0"], "--count")):
        with pytest.raises(SystemExit):
            probe.main(["ADAPTER", *arguments])
        assert named in capsys.readouterr().err


def _result(row, steps, kinds, exact):
    return {"row": row, "steps": steps, "kinds": kinds, "records": {"normal": {"exact": exact}}}


def test_rows_are_paired_with_the_first_on_the_examples_they_share(diagnosis):
    """A fine-tuned row against the untrained adapter: all edits and each kind; a one-kind row against the first
    row's edits of that kind, in order; a row over other examples is left out."""
    kinds = ["recolour", "move", "recolour", "add", "recolour"]
    reference = _result("mtu", 0, kinds, [False, True, False, True, False])
    trained = _result("mtu", 2000, kinds, [True, True, True, False, False])
    recolour = _result("mtu-recolour", 400, ["recolour"] * 4, [True, False, False, True])  # 4th: not shared
    other = _result("mtu", 10, kinds[:4], [True] * 4)
    lines = diagnosis.paired_rows([reference, trained, recolour, other])
    rows = [line for line in lines if line.startswith("| mtu")]
    assert rows[0] == "| mtu (2000 steps) | all | 5 | +0.200 (-0.400 to +0.800) | 2 / 1 | 1.000 |"
    assert rows[1] == "| mtu (2000 steps) | recolour | 3 | +0.667 (+0.000 to +1.000) | 2 / 0 | 0.500 |"
    assert rows[2].startswith("| mtu (2000 steps) | move | 1 | +0.000") and rows[3].startswith(
        "| mtu (2000 steps) | add | 1 | -1.000")
    # examples 0, 2, 4 of the reference (none exact there): one gained
    assert rows[4] == "| mtu-recolour (400 steps) | recolour | 3 | +0.333 (+0.000 to +1.000) | 1 / 0 | 1.000 |"
    assert len(rows) == 5  # the row over 4 other examples is not paired
    assert diagnosis.paired_rows([reference]) == []


def test_guidance_choice_refuses_a_count_below_one_before_loading_a_model(capsys):
    choice = load_benchmark("guidance_choice")
    for count, named in (("0", "got 0"), ("many", "invalid int value: 'many'")):
        with pytest.raises(SystemExit):
            choice.main(["toyworld", count])
        assert named in capsys.readouterr().err


def test_keep_weights_mark_the_shapes_a_recolouring_keeps(diagnosis):
    from dataclasses import replace

    from mtu.toyworld.scene import render

    def signed(scene):
        return torch.tensor(np.asarray(render(scene, 32)), dtype=torch.float32).permute(2, 0, 1)[None] / 127.5 - 1

    recoloured = Scene("gray", (replace(CIRCLE, colour="green"), SQUARE))
    weights = diagnosis.keep_weights(signed(SCENE), signed(recoloured), 8, 10.0)
    square = torch.nn.functional.adaptive_max_pool2d(torch.tensor(shape_mask(SQUARE), dtype=torch.float32)[None, None], 8)
    assert torch.equal(weights, 1 + 9 * square)  # the kept square weighs 10, the recoloured circle and background 1
    assert torch.equal(diagnosis.keep_weights(signed(SCENE), signed(Scene("white", SCENE.shapes)), 8, 10.0),
                       1 + 9 * torch.maximum(square, torch.nn.functional.adaptive_max_pool2d(
                           torch.tensor(shape_mask(CIRCLE), dtype=torch.float32)[None, None], 8)))


def test_distractor_recolourings_name_a_shape_beside_one_of_its_kind_or_colour(diagnosis):
    from dataclasses import replace

    from mtu.toyworld.scene import make_scenes, scene_split

    scenes = make_scenes(0, 300)
    lone = sum(len(scene.shapes) == 1 for scene in scenes)
    assert lone > 50  # the plain draw has many scenes where naming needs no contrast
    with_distractor = 0
    for index, scene in enumerate(scenes):
        edit = diagnosis.distractor_recolouring(scene, np.random.default_rng(index))
        assert edit.kind == "recolour" and scene_split(edit.before) == "train"
        others = [shape for shape in edit.before.shapes if shape != edit.shape]
        changed = [shape for shape in edit.after.shapes if shape not in others]
        assert len(changed) == 1 and changed[0] == replace(edit.shape, colour=changed[0].colour) != edit.shape
        assert edit.after.background == edit.before.background and len(edit.after.shapes) == len(edit.before.shapes)
        with_distractor += any(o.kind == edit.shape.kind or o.colour == edit.shape.colour for o in others)
    assert with_distractor >= 290  # all but the few whose every redraw fell in the test split


def test_recolour_binding_tells_bound_from_spilled_kept_and_other(diagnosis):
    from dataclasses import replace

    from mtu.toyworld.evaluate import Example
    from mtu.toyworld.scene import render

    after = Scene("gray", (replace(CIRCLE, colour="green"), SQUARE))
    edit = Edit("recolour", "make the circle green", SCENE, after, CIRCLE)
    example = Example(task="edit", prompt=edit.instruction, target=render(after), target_scene=after,
                      image=render(SCENE), edit=edit)
    spilled = Scene("gray", (replace(CIRCLE, colour="green"), replace(SQUARE, colour="green")))
    other = Scene("gray", (replace(CIRCLE, colour="yellow"), SQUARE))
    outcomes = [diagnosis.recolour_binding(example, np.asarray(render(scene))) for scene in (after, spilled, SCENE, other)]
    assert outcomes == ["bound", "spilled", "kept", "other"]
    with pytest.raises(ValueError, match="recolouring"):
        diagnosis.recolour_binding(replace(example, edit=replace(edit, kind="remove")), np.asarray(render(SCENE)))


def test_distractor_mixture_keeps_the_kinds_and_draws_recolourings_with_a_distractor(diagnosis):
    from mtu.tasks import base as plugins
    from mtu.toyworld.scene import make_scenes
    from mtu.toyworld.tasks import EDIT_KINDS

    patches = diagnosis._distractor_patch(only_recolourings=False)
    (module, name, value), = patches
    toy_pair = value["edit"].toy_pair
    plain = plugins.task_plugin("edit").toy_pair
    kinds, changed = set(), 0
    for index, scene in enumerate(make_scenes(0, 120)):
        fields = toy_pair(scene, 32, np.random.default_rng(index))
        reference = plain(scene, 32, np.random.default_rng(index))
        kind = fields["prompt"].split()[0]
        kinds.add(kind)
        if kind != "make":  # every other kind is drawn exactly as before
            assert fields["prompt"] == reference["prompt"]
        changed += fields["input_caption"] != reference["input_caption"]
    assert kinds == {"make", "add", "remove", "move", "change"} and len(EDIT_KINDS) == 5
    assert changed > 0  # some recolourings got a distractor put into their scene


def test_order_rows_put_the_colour_before_the_kind_and_keep_the_edits(diagnosis):
    from dataclasses import replace
    from unittest import mock

    from mtu.toyworld.evaluate import evaluation_set
    from mtu.toyworld.scene import make_scenes
    from mtu.toyworld.tasks import sample_edit

    recolour = Edit("recolour", "make the circle green", SCENE,
                    Scene("gray", (replace(CIRCLE, colour="green"), SQUARE)), CIRCLE)
    assert diagnosis.colour_first(recolour) == "make the circle a green circle"
    with pytest.raises(ValueError, match="recolouring"):
        diagnosis.colour_first(replace(recolour, kind="remove"))
    scenes = make_scenes(0, 60)
    plain = [sample_edit(scene, np.random.default_rng(i)) for i, scene in enumerate(scenes)]
    (module, name, value), = diagnosis._order_patch()
    with mock.patch.object(module, name, value):
        ordered = [sample_edit(scene, np.random.default_rng(i)) for i, scene in enumerate(scenes)]
    assert [e.after for e in ordered] == [e.after for e in plain]  # the same edits, drawn alike
    assert any(e.kind == "recolour" for e in plain)
    for old, new in zip(plain, ordered):
        assert new.instruction == (diagnosis.colour_first(old) if old.kind == "recolour" else old.instruction)
    examples = evaluation_set("edit", 40)
    rephrased = diagnosis.row_examples("mtu-order", examples)
    assert [ex.edit.after for ex in rephrased] == [ex.edit.after for ex in examples]
    assert all(ex.prompt.endswith(ex.edit.shape.kind) for ex in rephrased if ex.edit.kind == "recolour")


def test_new_words_are_in_instructions_and_in_no_caption_of_the_base(diagnosis):
    from transformers import CLIPTokenizer

    from mtu.shipped import shipped_base
    from mtu.toyworld.scene import caption, make_scenes, partial_caption
    from mtu.toyworld.tasks import sample_edit

    tokenizer = CLIPTokenizer.from_pretrained(shipped_base() / "tokenizer")
    new = set(diagnosis.word_token_ids(tokenizer, diagnosis.NEW_WORDS))
    rng = np.random.default_rng(0)
    scenes = make_scenes(0, 400)
    captions = [caption(scene) for scene in scenes] + [partial_caption(scene, rng) for scene in scenes]
    caption_ids = {i for text in captions for i in tokenizer(text, add_special_tokens=False).input_ids}
    assert not new & caption_ids  # the base never read these words
    instruction_ids = {i for scene in scenes for i in
                       tokenizer(sample_edit(scene, rng).instruction, add_special_tokens=False).input_ids}
    assert new <= instruction_ids  # and every one of them is in some instruction
    assert instruction_ids - new <= caption_ids  # the instructions' other words are all caption words


def test_train_only_rows_moves_those_embedding_rows_alone(diagnosis):
    embedding = torch.nn.Embedding(10, 4)
    before = embedding.weight.detach().clone()
    params = diagnosis.train_only_rows(embedding, [2, 7])
    optimizer = torch.optim.Adam(params, lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        embedding(torch.arange(10)).pow(2).sum().backward()
        optimizer.step()
    moved = (embedding.weight.detach() != before).any(dim=1)
    assert moved.tolist() == [i in (2, 7) for i in range(10)]
    from transformers import CLIPTokenizer

    from mtu.shipped import shipped_base

    with pytest.raises(ValueError, match="tokens"):
        diagnosis.word_token_ids(CLIPTokenizer.from_pretrained(shipped_base() / "tokenizer"), ["make the"])


def test_task_only_text_encoder_trains_a_copy_that_only_its_task_reads(diagnosis, tmp_path):
    """`_train_with_text_encoder(tasks=("edit",))`: the copy moves, the base's encoder stays bit for bit, and the
    trainer hands t2i prompts the base's encoding while edit prompts get the copy's."""
    from mtu.training.config import config_from_dict
    from mtu.training.trainer import Trainer

    from .training_parts import tiny_run_config

    config = config_from_dict(tiny_run_config(tmp_path, max_steps=3, checkpoint_every=0, batch_size=4))
    seen = []
    original_train = Trainer.train

    def train_and_probe(trainer):
        base = {name: value.detach().clone() for name, value in trainer.parts.text_encoder.state_dict().items()}
        summary = original_train(trainer)
        prompts = ["a red circle", "make the circle blue"]
        mixed, _ = trainer.encode_text(prompts, ["t2i", "edit"])
        with torch.no_grad():
            plain, _ = Trainer.encode_text(trainer, prompts)
        seen.append((base, trainer.parts.text_encoder.state_dict(), mixed.detach(), plain))
        with pytest.raises(ValueError, match="each prompt's task"):
            trainer.encode_text(prompts)
        return summary

    Trainer.train = train_and_probe
    try:
        _, trained = diagnosis._train_with_text_encoder(config, 1e-2, tasks=("edit",))
    finally:
        Trainer.train = original_train
    (base, after, mixed, plain), = seen
    assert all(torch.equal(base[name], after[name]) for name in base)  # the base's encoder never moved
    assert any(not torch.equal(base[name], value) for name, value in trained.state_dict().items())
    assert torch.equal(mixed[0], plain[0].float())  # t2i reads the base's encoding
    assert not torch.allclose(mixed[1], plain[1].float())  # edit reads the trained copy's


def test_text_encoder_start_without_tasks_is_refused_before_the_trainer_is_built(diagnosis):
    with pytest.raises(ValueError, match="`start`: only for a task-only text encoder"):
        diagnosis._train_with_text_encoder(None, 1e-3, start="some-folder")  # no config needed: refused first
