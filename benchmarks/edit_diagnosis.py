"""Why is editing not learned on the toy world? One training run per suspect, each changing one thing (issue 11).

Every row trains on the edit task alone (so rows differ only in the suspect they test) from the shipped base (or
`--base`), then generates `--eval-count` held-out edits and records, per example: the edit kind, whether the
output parses to the target scene (exact success), to the unchanged input scene (copied), and, as ablations at
inference, the same with the input image replaced by another example's input (does the output follow the image?) and with
the instruction replaced by the empty prompt (does it follow the text?).

    python benchmarks/edit_diagnosis.py --rows mtu,full --steps 1600 --out diag/

Rows: `mtu` (N=4, G=1/4, the demo's method), `full` (full UNet fine-tune, lr `--full-lr`), `mtu-caption` (the
instruction replaced by the caption of the target scene, words the base's text encoder was trained on: tests the
untrained instruction words, but the caption alone also allows drawing the target without the image), `mtu-text`
(the base's text encoder trained along with the MTU parameters, at `--text-lr`: if untrained words are the
cause, this row learns them), `mtu-text-words` (only the token embeddings of the words no caption of the base's
pre-training holds, `NEW_WORDS`, trained: textual inversion of the instruction verbs; every caption's encoding
stays bit for bit the base's, since the causal encoder never reads those tokens in a caption), `mtu-mode` (the target latents are the VAE posterior's mean instead of a sample from
it: tests the noise that sampling the toy VAE's wide posterior adds to every target), `mtu-KIND` (trained and
scored on one edit kind alone, e.g. `mtu-background`: is one edit kind learnable, or is the mixture the
difficulty?), `mtu-copy` (the null edit: the target is the input image and the prompt empty; scored on whether
the output is the input scene: can the image path carry a scene through the model at all?), `mtu-image-x5` (the
input image's latents multiplied by 5 wherever they enter the UNet, in training and sampling alike: under Adam
that is 5x the step size of the zero-initialised image channels of `conv_in`), `mtu-snr5` (Min-SNR-5 loss
weighting, `TrainConfig.snr_gamma`), `mtu-image-init` (`conv_in`'s input-image channels start as a copy of its
latent channels instead of zeros), `mtu-refer-position` (every instruction names its shape in full with its
cell, "remove the red circle at the top left", where the toy world says the shortest unambiguous name, "remove
the circle": can the model find a shape by where it is when it cannot by what it is?), `mtu-region` (the edit
task gets a mask channel marking the cells the edit changes, in training and scoring, with SD-inpainting's text
guidance: is finding where to edit the difficulty, or making the change there?), `mtu-change-x10` (the loss weighs
the latent pixels the edit changes 10 times the rest: does the edit wait for samples because its share of the
loss is small?), and the twelfth round's remedies for binding a new colour to the named shape, each one change
to `mtu-recolour` (recolourings alone) or to `mtu` (all kinds): `mtu-recolour-distractor` / `mtu-distractor`
(every training recolouring in a scene with another shape of the named shape's kind or colour,
`distractor_recolouring`), `mtu-recolour-keep-x10` (the loss weighs the latent pixels of the shapes the edit
keeps 10 times, `keep_weights`), `mtu-recolour-xattn` / `mtu-xattn` (the UNet's cross-attention value/output
projections trained too, a diagnosis-only change: MTU freezes attention; they are not in the saved adapter),
`mtu-recolour-order` / `mtu-order` (recolourings worded colour first, "make the circle a red circle", in training
and scoring: `colour_first`). `--tables` also prints where the asked colour of each row's recolourings went
(`recolour_binding`). Pass `--adapter` a folder that nothing rewrites while rows run (each row loads it when it
starts). `--base DIR` trains from another base pipeline folder (e.g. a continued
`mtu toyworld pretrain`). `--adapter DIR` starts every MTU row from a trained MTU adapter of that base (fine-tuning
it, e.g. `mtu-recolour` from the shipped model: is an edit kind slow to learn or at a plateau?), and with `--steps
0` scores the adapter as it is, untrained, as the reference on the same examples. Each row's outputs (uint8
arrays) and per-example records go to OUT/ROW.npz and OUT/diagnosis.json, rewritten after every row; the table
is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import ExitStack
from dataclasses import replace
from unittest import mock
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # recolour_word_probe, beside this file

KIND_ROWS = {f"mtu-{kind}": kind for kind in ("recolour", "add", "remove", "move", "background")}
# Rows trained and scored on recolourings alone, each with one change to `mtu-recolour` (the eleventh round's
# remedies for binding the new colour to the named shape).
KIND_ROWS.update({"mtu-recolour-distractor": "recolour", "mtu-recolour-keep-x10": "recolour",
                  "mtu-recolour-xattn": "recolour", "mtu-recolour-order": "recolour"})
XATTN_ROWS = ("mtu-xattn", "mtu-recolour-xattn")  # the cross-attention's value/output projections trained too
ROWS = ("mtu", "full", "mtu-caption", "mtu-text", "mtu-text-words", "mtu-mode", "mtu-copy", "mtu-image-x5", "mtu-snr5", "mtu-image-init",
        "mtu-refer-position", "mtu-region", "mtu-change-x10", "mtu-distractor", "mtu-xattn", "mtu-order", *KIND_ROWS)
TEXT_ROWS = ("mtu-text", "mtu-text-words")  # the text encoder (or the new words' embeddings) trained too
# The instruction words that no caption of the base's pre-training holds (`scene.caption`, `scene.partial_caption`):
# the frozen text encoder keeps their initial random embeddings (tests/test_edit_diagnosis.py checks the list).
NEW_WORDS = ("make", "add", "remove", "move", "change", "to")
ORDER_ROWS = ("mtu-order", "mtu-recolour-order")  # recolourings phrased with the colour before the kind


# Each `_*_patch` returns [(module, attribute, replacement)]; `run_row` applies them for that row only.
def _scaled_condition_patch(factor: float):
    """Multiplies the conditioning channels by `factor` in the trainer and the pipelines (every module that
    imported `condition_channels`)."""
    from mtu import conditioning
    from mtu.pipelines import common
    from mtu.training import cache, step

    original = conditioning.condition_channels

    def scaled(*args, **kwargs):
        channels = original(*args, **kwargs)
        return None if channels is None else channels * factor

    return [(module, "condition_channels", scaled) for module in (conditioning, common, cache, step)]


def _toy_pair_patch(toy_pair):
    """Makes the toy-world data source draw the edit task's training pairs with `toy_pair(scene, size, rng)`
    (the held-out examples are drawn by the task's evaluation, which this leaves alone)."""
    from mtu.tasks import base as plugins

    edit_task = replace(plugins.task_plugin("edit"), toy_pair=toy_pair)
    return [(plugins, "_PLUGINS", {**plugins._PLUGINS, "edit": edit_task})]


def _edit_fields_patch(rewrite):
    """Makes the toy-world edit source pass every edit's fields through `rewrite` (fields -> overrides)."""
    from mtu.tasks import base as plugins

    original = plugins.task_plugin("edit").toy_pair

    def toy_pair(scene, size, rng):
        fields = original(scene, size, rng)
        return {**fields, **rewrite(fields)}

    return _toy_pair_patch(toy_pair)


def _null_edit(example):
    """The held-out example as a null edit: empty prompt, the input scene as the target."""
    edit = replace(example.edit, instruction="", after=example.edit.before)
    return replace(example, prompt="", target=example.image, target_scene=edit.before, edit=edit)


def _single_kind_patch(kind: str):
    """Makes the toy-world edit source draw only edits of `kind` (any kind for the few scenes it does not apply to,
    e.g. a background change of a gray scene with a black and a white shape)."""
    from mtu.toyworld.tasks import EDIT_KINDS, edit_pair, possible_edits, sample_edit

    def toy_pair(scene, size, rng):
        kinds = (kind,) if kind in possible_edits(scene) else EDIT_KINDS
        return edit_pair(sample_edit(scene, rng, kinds=kinds), size)

    return _toy_pair_patch(toy_pair)


def distractor_recolouring(scene, rng):
    """A recolouring of a shape that has a distractor: another shape of its kind or of its colour in the scene,
    which the edit keeps. When the drawn scene has none, one is put in (in a free cell, or in place of another
    shape when the scene is full), of the named shape's kind in another colour or of its colour as another kind
    (even odds), redrawn until the scene stays in the train split (else the scene as it is). The contrast a
    plain recolouring lacks: "make the circle red" in a scene with one circle is solved by reddening every shape,
    "make the blue circle red" beside a green circle is not."""
    from mtu.toyworld.scene import KINDS, MAX_SHAPES, SHAPE_COLOURS, SIZES, Scene, Shape, scene_split
    from mtu.toyworld.tasks import recolouring

    def pick(options):
        return options[int(rng.integers(len(options)))]

    shape = pick(list(scene.shapes))
    others = [other for other in scene.shapes if other != shape]
    if not any(other.kind == shape.kind or other.colour == shape.colour for other in others):
        for _ in range(8):
            if rng.random() < 0.5:
                kind, colour = shape.kind, pick([c for c in SHAPE_COLOURS if c not in (shape.colour, scene.background)])
            else:
                kind, colour = pick([k for k in KINDS if k != shape.kind]), shape.colour
            kept = list(others)
            if len(scene.shapes) == MAX_SHAPES:
                kept.pop(int(rng.integers(len(kept))))
            free = Scene(scene.background, (shape, *kept)).free_positions()
            distractor = Shape(kind, colour, pick(list(SIZES)), pick(free))
            candidate = Scene(scene.background, (shape, *kept, distractor))
            if scene_split(candidate) == "train":
                scene = candidate
                break
    return recolouring(scene, shape, pick([c for c in SHAPE_COLOURS if c not in (shape.colour, scene.background)]))


def _distractor_patch(only_recolourings: bool):
    """Makes the toy-world edit source draw its recolourings with a distractor (`distractor_recolouring`): only
    recolourings, or every kind as before with each recolouring drawn that way."""
    from mtu.toyworld.tasks import edit_pair, sample_edit

    def toy_pair(scene, size, rng):
        edit = None if only_recolourings else sample_edit(scene, rng)
        if edit is None or edit.kind == "recolour":
            edit = distractor_recolouring(scene, rng)
        return edit_pair(edit, size)

    return _toy_pair_patch(toy_pair)


def asked_colour(edit) -> str:
    """The colour a recolouring asks for: its shape's colour in `edit.after`."""
    return next(shape for shape in edit.after.shapes if shape.position == edit.shape.position).colour


def colour_first(edit) -> str:
    """A recolouring's instruction with the new colour before the kind, as in the captions the base learnt: "make
    the circle a red circle" for "make the circle red". The frozen text encoder is causal, so in "make the circle
    red" the kind's token has not seen the colour; in "a red circle" it has, as in every caption."""
    from mtu.toyworld.tasks import refer

    if edit.kind != "recolour":
        raise ValueError(f"`edit` must be a recolouring, got a {edit.kind!r} edit.")
    return f"make {refer(edit.before, edit.shape)} a {asked_colour(edit)} {edit.shape.kind}"


def _order_patch():
    """Makes the toy world's recolourings say `colour_first` instructions (training draws; the held-out examples
    are rephrased by `row_examples`)."""
    from mtu.toyworld import tasks

    def recolour(scene, rng):
        edit = tasks._recolour(scene, rng)
        return replace(edit, instruction=colour_first(edit))

    return [(tasks, "_BUILDERS", {**tasks._BUILDERS, "recolour": recolour})]


def _of_kind(examples, kind: str):
    """Held-out edits of one kind, as many as `examples` (drawn from a longer prefix of the same fixed list)."""
    from mtu.toyworld.evaluate import evaluation_set

    chosen = [ex for ex in evaluation_set("edit", 8 * len(examples)) if ex.edit.kind == kind]
    return chosen[:len(examples)]


def _mean_target_patch():
    """Makes the trainer's target latents the VAE posterior mean (a zero std: no sample noise)."""
    from mtu.training import step

    original = step._target_moments

    def target_moments(parts, batch, dtype):
        mean, std = original(parts, batch, dtype)
        return mean, torch.zeros_like(std)

    return [(step, "_target_moments", target_moments)]


def change_weights(condition: torch.Tensor, target: torch.Tensor, latent_size: int, weight: float) -> torch.Tensor:
    """(B, 1, h, w) loss weights: `weight` on the latent pixels whose patch of the image differs between the input
    (`condition`) and the target, 1 elsewhere. Images in [-1, 1] of the same size; a latent pixel counts as changed
    when any pixel of its patch differs by more than 2/255 in any channel."""
    changed = ((condition - target).abs().amax(dim=1, keepdim=True) > 2 / 127.5).float()
    changed = torch.nn.functional.adaptive_max_pool2d(changed, latent_size)
    return 1 + (weight - 1) * changed


def keep_weights(condition: torch.Tensor, target: torch.Tensor, latent_size: int, weight: float) -> torch.Tensor:
    """(B, 1, h, w) loss weights: `weight` on the latent pixels whose patch holds a shape the edit keeps (a pixel
    unchanged between input and target, within 2/255, that differs from the input's background, read at its
    top-left pixel, which no shape reaches), 1 elsewhere. The reverse of `change_weights`: it weighs what a
    spilling edit breaks."""
    unchanged = (condition - target).abs().amax(dim=1, keepdim=True) <= 2 / 127.5
    shape = (condition - condition[:, :, :1, :1]).abs().amax(dim=1, keepdim=True) > 2 / 127.5
    kept = torch.nn.functional.adaptive_max_pool2d((unchanged & shape).float(), latent_size)
    return 1 + (weight - 1) * kept


def _change_weight_patch(weight: float, weights_of=change_weights):
    """The loss weighs the latent pixels the edit changes `weight` times the rest (each sample's weights normalised
    to mean 1, so a sample's loss is the weighted mean of its squared errors): does the edit fail because its
    share of the loss is small? With `weights_of=keep_weights`, the pixels of the shapes it keeps instead."""
    from mtu.training import step, trainer

    original, state = trainer.micro_step_loss, {}

    class WeightedFunctional:  # torch.nn.functional, with `mse_loss` weighted per latent pixel
        def __getattr__(self, name):
            return getattr(torch.nn.functional, name)

        @staticmethod
        def mse_loss(prediction, target, reduction="mean"):
            assert reduction == "none", reduction
            weights = weights_of(*state["images"], prediction.shape[-1], weight).to(prediction.device)
            errors = torch.nn.functional.mse_loss(prediction, target, reduction="none")
            return errors * weights / weights.mean(dim=(1, 2, 3), keepdim=True)

    def micro_step_loss(model, batch, **kwargs):
        state["images"] = batch["condition"][:, :3].float(), batch["target"].float()
        return original(model, batch, **kwargs)

    return [(trainer, "micro_step_loss", micro_step_loss), (step, "F", WeightedFunctional())]


def _full_reference(scene, shape) -> str:
    """Every shape named with its colour, kind and cell ("the red circle at the top left"), never shorter."""
    from mtu.toyworld.scene import POSITION_PHRASES

    if shape not in scene.shapes:
        raise ValueError(f"`shape` {shape} is not in the scene.")
    return f"the {shape.colour} {shape.kind} {POSITION_PHRASES[shape.position]}"


def _refer_patch():
    """Makes every edit name its shape in full, cell included (`_full_reference`), in training and scoring."""
    from mtu.toyworld import tasks

    return [(tasks, "refer", _full_reference)]


def edit_region(edit, size: int = 32):
    """Mode-"L" mask, white over every grid cell the edit changes (the referred shape's cell, an added shape's,
    both cells of a move; the whole image for a background change)."""
    from PIL import Image

    from mtu.toyworld.scene import cell_geometry

    region = np.zeros((size, size), dtype=np.uint8)
    if edit.kind == "background":
        region[:] = 255
    else:
        moved = [shape for shape in edit.after.shapes if shape not in edit.before.shapes]
        for shape in {edit.shape, *moved}:
            centre_x, centre_y, cell = cell_geometry(shape.position, size)
            top, left = int(centre_y - cell / 2), int(centre_x - cell / 2)
            region[top:top + int(np.ceil(cell)), left:left + int(np.ceil(cell))] = 255
    return Image.fromarray(region, mode="L")


def _region_patch():
    """The edit task gets a mask channel after its input image (`TaskSpec` image inputs ("image", "mask")), filled
    with `edit_region` in training and scoring: the model is told where the edit happens."""
    from mtu.tasks import base as plugins
    from mtu.toyworld import evaluate
    from mtu.toyworld.tasks import edit_pair, sample_edit
    from mtu.upcycling import tasks as registry

    spec = replace(registry.get_task("edit"), image_inputs=("image", "mask"))

    def toy_pair(scene, size, rng):
        edit = sample_edit(scene, rng)
        return {**edit_pair(edit, size), "mask": edit_region(edit, size)}

    scene_outputs = evaluate.generate_outputs

    def generate_outputs(pipe, examples, seed=0, batch_size=32, stock=False, indices=None, **call_kwargs):
        call_kwargs.pop("image_guidance_scale", None)  # a task with a mask takes text guidance (SD inpainting)
        return scene_outputs(pipe, examples, seed, batch_size, stock, indices, **call_kwargs,
                             chunk_kwargs=lambda chunk: {"mask_image": [edit_region(ex.edit) for ex in chunk]})

    edit_task = replace(plugins.task_plugin("edit"), spec=spec, toy_pair=toy_pair)
    return [(registry.TASK_REGISTRY, "items", {**registry.TASK_REGISTRY.items, "edit": spec}),
            (plugins, "_PLUGINS", {**plugins._PLUGINS, "edit": edit_task}),
            (evaluate, "generate_outputs", generate_outputs)]


def row_examples(row: str, examples: list) -> list:
    """The held-out edits `row` is scored on: `examples`, or their null edits, one kind's edits, or with the
    target's caption as the prompt."""
    from mtu.toyworld.scene import caption

    if row == "mtu-copy":
        return [_null_edit(ex) for ex in examples]
    if row in ORDER_ROWS:
        chosen = _of_kind(examples, "recolour") if row in KIND_ROWS else examples
        return [ex if ex.edit.kind != "recolour" else
                replace(ex, prompt=colour_first(ex.edit), edit=replace(ex.edit, instruction=colour_first(ex.edit)))
                for ex in chosen]
    if row in KIND_ROWS:
        return _of_kind(examples, KIND_ROWS[row])
    if row == "mtu-caption":
        return [replace(ex, prompt=caption(ex.edit.after)) for ex in examples]
    if row == "mtu-refer-position":  # the same edits (`refer` draws nothing), named in full
        from mtu.toyworld.evaluate import evaluation_set

        with mock.patch.object(*_refer_patch()[0]):
            return evaluation_set("edit", len(examples))
    return examples


def _image_init_patch():
    """Each task's `conv_in` starts with the base's latent-channel weights on its input-image channels too (instead
    of zeros), so the input image's latents make, from the first step, the features a clean latent makes."""
    from mtu.upcycling import input_conv

    original = input_conv.TaskInputConv.__init__

    def init(self, base, specs):
        original(self, base, specs)
        with torch.no_grad():
            for spec in specs:
                if "image" in spec.image_inputs:
                    start = self.latent_channels * (1 + spec.image_inputs.index("image"))
                    self.convs[spec.name].weight[:, start:start + self.latent_channels].copy_(base.weight)

    return [(input_conv.TaskInputConv, "__init__", init)]


def row_patches(row: str) -> list:
    """What `row` changes in the code it runs, as [(module, attribute, replacement)]."""
    if row == "mtu-mode":
        return _mean_target_patch()
    if row == "mtu-image-x5":
        return _scaled_condition_patch(5.0)
    if row == "mtu-image-init":
        return _image_init_patch()
    if row == "mtu-refer-position":
        return _refer_patch()
    if row == "mtu-region":
        return _region_patch()
    if row == "mtu-change-x10":
        return _change_weight_patch(10.0)
    if row == "mtu-copy":
        return _edit_fields_patch(lambda fields: {"target": fields["condition"], "prompt": "",
                                                  "output_caption": fields["input_caption"]})
    if row in ("mtu-recolour-distractor", "mtu-distractor"):
        return _distractor_patch(only_recolourings=row == "mtu-recolour-distractor")
    if row == "mtu-order":
        return _order_patch()
    if row == "mtu-recolour-order":
        return _order_patch() + _single_kind_patch("recolour")
    if row == "mtu-recolour-keep-x10":
        return _single_kind_patch("recolour") + _change_weight_patch(10.0, keep_weights)
    if row in KIND_ROWS:  # mtu-recolour-xattn too: its own change is in `_train_with_cross_attention`
        return _single_kind_patch(KIND_ROWS[row])
    if row == "mtu-caption":
        return _edit_fields_patch(lambda fields: {"prompt": fields["output_caption"]})
    return []


def run_row(row: str, args, examples, base: str) -> dict:
    """Trains and scores one row with its patches in place (undone afterwards, so rows in one process stay
    independent)."""
    with ExitStack() as stack:
        for module, name, value in row_patches(row):
            stack.enter_context(mock.patch.object(module, name, value))
        return _train_and_evaluate(row, args, row_examples(row, examples), base)


def _train_and_evaluate(row: str, args, examples, base: str) -> dict:
    from mtu.toyworld.experiment import pipeline_for, toyworld_train_config, train_and_score

    method = "full" if row == "full" else "mtu"
    lr = args.full_lr if method == "full" else args.lr
    if args.steps == 0:  # the adapter as it is (checked in `main`: only with --adapter)
        from mtu.pipelines import MTUPipeline

        pipe = MTUPipeline.from_base(base, args.adapter)
        pipe.set_progress_bar_config(disable=True)
        return {"row": row, "method": method, "lr": lr, "steps": 0, "batch": args.batch, "train_seconds": 0.0,
                **evaluate_edit(pipe, examples, args)}
    config = toyworld_train_config(base, Path(args.out) / f"run-{row}", tasks=("edit",), method=method,
                                   mtu={"num_experts": 4}, steps=args.steps, batch_size=args.batch, lr=lr,
                                   seed=args.seed, log_with="none")
    if row == "mtu-snr5":
        config.snr_gamma = 5.0
    if method == "mtu" and args.adapter:
        config.model.adapter = args.adapter
    start = time.perf_counter()
    if row in TEXT_ROWS:
        model, text_encoder = _train_with_text_encoder(config, args.text_lr,
                                                       NEW_WORDS if row == "mtu-text-words" else None)
    elif row in XATTN_ROWS:
        model, text_encoder = _train_with_cross_attention(config, lr), None
    else:
        model, text_encoder = train_and_score(config, {}, args.seed)["model"], None  # no examples: training only
    seconds = time.perf_counter() - start
    if method == "mtu":  # for later probes: mtu.load_mtu(OUT/ROW-adapter), MTUPipeline.from_base(base, ...)
        model.save_pretrained(Path(args.out) / f"{row}-adapter")
    pipe = pipeline_for(model, base)
    if text_encoder is not None:
        pipe.text_encoder = text_encoder
    return {"row": row, "method": method, "lr": lr, "steps": args.steps, "batch": args.batch,
            "train_seconds": seconds,
            **evaluate_edit(pipe, examples, args)}


def _add_param_group(trainer, params: list, lr: float, schedule) -> None:
    """Gives `params` their own Adam group in `trainer`'s optimizer at `lr` times `schedule(step)` (the trainer's
    LambdaLR holds one schedule per group)."""
    trainer.optimizer.optimizer.add_param_group({"params": params, "lr": lr * schedule(trainer.lr_scheduler.last_epoch)})
    trainer.lr_scheduler.lr_lambdas.append(schedule)
    trainer.lr_scheduler.base_lrs.append(lr)


def word_token_ids(tokenizer, words) -> list[int]:
    """The token id of each word (each must be one token of `tokenizer`)."""
    ids = []
    for word in words:
        tokens = tokenizer(word, add_special_tokens=False).input_ids
        if len(tokens) != 1:
            raise ValueError(f"`words`: {word!r} is {len(tokens)} tokens, expected one")
        ids.append(tokens[0])
    return ids


def train_only_rows(embedding: torch.nn.Embedding, ids: list[int]) -> list[torch.nn.Parameter]:
    """Makes `embedding` trainable with the gradient of every row but `ids` zeroed, so that under Adam (no weight
    decay) the other rows never move; returns its parameters for the optimizer."""
    keep = torch.zeros(embedding.weight.shape[0], 1, dtype=embedding.weight.dtype, device=embedding.weight.device)
    keep[ids] = 1.0
    embedding.weight.requires_grad_(True)
    embedding.weight.register_hook(lambda grad: grad * keep)
    return [embedding.weight]


def _train_with_text_encoder(config, text_lr: float, words=None, tasks=None, start=None):
    """Trains `config` with the frozen text encoder made trainable (its own Adam group at `text_lr`, constant):
    a diagnosis-only change: the trainer's text encoding replaced by one with gradients. `words`: only those
    words' token embeddings train (the rest of the encoder stays frozen). `tasks`: a copy of the encoder trains,
    read by those tasks' samples alone; every other task keeps the base's frozen encoder. Returns (model, the
    trained encoder). `start`: with `tasks`, the copy starts from this saved text encoder folder (an arm continued)."""
    import copy

    from transformers import CLIPTextModel

    from mtu.conditioning import tokenize_prompts
    from mtu.training.trainer import Trainer

    if start is not None and tasks is None:
        raise ValueError("`start`: only for a task-only text encoder (`tasks`)")
    trainer = Trainer(config)
    base_encoder = trainer.parts.text_encoder
    text_encoder = (base_encoder if tasks is None else copy.deepcopy(base_encoder) if start is None
                    else CLIPTextModel.from_pretrained(start).to(trainer.device)).float().train()
    tokenizer, device = trainer.parts.tokenizer, trainer.device
    if words is None:
        params = list(text_encoder.requires_grad_(True).parameters())
    else:
        text_encoder.requires_grad_(False)
        params = train_only_rows(text_encoder.get_input_embeddings(), word_token_ids(tokenizer, words))
    _add_param_group(trainer, params, text_lr, lambda step: 1.0)
    base_encode = trainer.encode_text

    def trained(rows):  # SD's encoding (`components.encode_prompts`), with gradients to the encoder
        with torch.enable_grad():
            return text_encoder(tokenize_prompts(tokenizer, rows, warn=False).input_ids.to(device))[0]

    def encode_text(prompts, prompt_tasks=None):
        if tasks is None:
            return trained(prompts), {}
        if prompt_tasks is None:
            raise ValueError("`encode_text`: a task-only text encoder needs each prompt's task")
        own = [index for index, task in enumerate(prompt_tasks) if task in tasks]
        hidden, kwargs = base_encode(prompts, prompt_tasks)
        if not own:
            return hidden, kwargs
        with torch.enable_grad():  # the step encodes under no_grad
            hidden = hidden.float().clone()
            hidden[own] = trained([prompts[index] for index in own])
        return hidden, kwargs

    trainer.encode_text = encode_text
    trainer.train()
    return trainer.trained_model(ema=True), text_encoder.eval().requires_grad_(False)


def cross_attention_projections(unet) -> list[torch.nn.Parameter]:
    """The value and output projections (`to_v`, `to_out.0`; weights and biases) of every cross-attention."""
    return [param for name, module in unet.named_modules() if name.endswith("attn2")
            for part in (module.to_v, module.to_out[0]) for param in part.parameters()]


def _train_with_cross_attention(config, lr: float):
    """Trains `config` with the UNet's cross-attention value/output projections made trainable too (their own Adam
    group at `lr`, on the run's schedule; outside the trainer's gradient clipping): a diagnosis-only change, since
    MTU freezes attention. Shared by every task, which is moot in a one-task row."""
    from mtu.training.trainer import Trainer

    trainer = Trainer(config)
    unet = trainer.accelerator.unwrap_model(trainer.model).unet
    params = [param.requires_grad_(True) for param in cross_attention_projections(unet)]
    _add_param_group(trainer, params, lr, trainer.lr_scheduler.lr_lambdas[0])  # the MTU group's warm-up and cosine
    trainer.train()
    return trainer.trained_model(ema=True)


def evaluate_edit(pipe, examples, args) -> dict:
    """Per-example records under the normal call and the two ablations."""
    from mtu.toyworld.evaluate import generate_outputs
    from mtu.toyworld.oracle import try_parse

    kwargs = {"guidance_scale": args.text_guidance, "image_guidance_scale": args.image_guidance}
    shifted = examples[1:] + examples[:1]  # another example's input image, same instruction
    swapped = [replace(ex, image=other.image) for ex, other in zip(examples, shifted)]
    empty = [replace(ex, prompt="") for ex in examples]
    records, arrays = {}, {}
    for name, inputs in (("normal", examples), ("image_swapped", swapped), ("empty_prompt", empty)):
        outputs = generate_outputs(pipe, inputs, args.seed, **kwargs)
        arrays[name] = np.stack([np.asarray(image.convert("RGB")) for image in outputs])
        parsed = [try_parse(image) for image in outputs]
        given = shifted if name == "image_swapped" else examples  # whose input image was passed
        records[name] = {
            "exact": [p == ex.edit.after for p, ex in zip(parsed, examples)],
            "copied": [p == other.edit.before for p, other in zip(parsed, given)],
            "follows_original_input": [0.0 if p is None else _shared_shapes(p, ex.edit.before)
                                       for p, ex in zip(parsed, examples)],
            "follows_given_input": [0.0 if p is None else _shared_shapes(p, other.edit.before)
                                    for p, other in zip(parsed, given)],
            "parsed": [p is not None for p in parsed],
        }
    return {"kinds": [ex.edit.kind for ex in examples], "records": records, "_arrays": arrays,
            "partial": partial_summary(examples, arrays["normal"])}


def partial_summary(examples, outputs) -> dict:
    """Per-attribute accuracy and preservation of the normal outputs (`mtu.toyworld.metrics`), with intervals."""
    from mtu.toyworld.metrics import example_record, summarize

    summary = summarize([example_record(ex, output) for ex, output in zip(examples, outputs)])
    return {key: value for key, value in summary.items()
            if key.startswith("attr_") or key in ("preserved", "exact", "copied", "per_kind")}


def _shared_shapes(parsed, scene) -> float:
    """Share of `scene`'s shapes (plus its background) found unchanged in `parsed`."""
    items = list(scene.shapes)
    hits = sum(shape in parsed.shapes for shape in items) + (parsed.background == scene.background)
    return hits / (len(items) + 1)


def table(results: list[dict]) -> str:
    from mtu.stats import wilson_interval

    kinds = ("recolour", "add", "remove", "move", "background")
    lines = ["| row | steps | exact (95% CI) | " + " | ".join(kinds) + " | copied | input kept (normal) | "
             "swapped: follows given / original input | empty prompt: exact, copied | "
             "kind / colour / size / position / background | preserved |",
             "|---|---:|---|" + "---:|" * len(kinds) + "---:|---:|---|---|---|---|"]
    for result in results:
        normal = result["records"]["normal"]
        exact = np.array(normal["exact"])
        low, high = wilson_interval(int(exact.sum()), len(exact))
        per_kind = []
        for kind in kinds:
            mask = np.array(result["kinds"]) == kind
            per_kind.append(f"{int(exact[mask].sum())}/{int(mask.sum())}")
        swapped = result["records"]["image_swapped"]
        empty = result["records"]["empty_prompt"]
        lines.append(
            f"| {result['row']} | {result['steps']} | {exact.mean():.3f} ({low:.3f}-{high:.3f}) | "
            + " | ".join(per_kind)
            + f" | {np.mean(normal['copied']):.3f} | {np.mean(normal['follows_given_input']):.3f} | "
            f"{np.mean(swapped['follows_given_input']):.3f} / {np.mean(swapped['follows_original_input']):.3f} | "
            f"{np.mean(empty['exact']):.3f}, {np.mean(empty['copied']):.3f} | " + _partial_cells(result) + " |")
    return "\n".join(lines)


def paired_rows(results: list[dict]) -> list[str]:
    """Table lines: each later row's exact success minus the first row's on the examples they share, over all of
    them and per edit kind, paired (interval and McNemar): e.g. a fine-tuned row against `--steps 0`, the adapter
    it started from. A one-kind row (`mtu-recolour`) is paired with the first row's edits of that kind: its
    examples (`_of_kind`) are the held-out list's edits of that kind in order, so its first ones are the first row's
    (the same scenes and instructions; the sampling noise follows each list's positions, so it is drawn anew). A
    row over other examples is left out."""
    from mtu.stats import paired_difference
    from mtu.toyworld.metrics import paired_cells

    first = results[0]
    first_exact, first_kinds = first["records"]["normal"]["exact"], first["kinds"]
    lines = []
    for result in results[1:]:
        exact, kinds = result["records"]["normal"]["exact"], result["kinds"]
        if result["row"] in KIND_ROWS and first["row"] not in KIND_ROWS:
            indices = [i for i, kind in enumerate(first_kinds) if kind == KIND_ROWS[result["row"]]]
            exact, kinds = exact[:len(indices)], kinds[:len(indices)]
        else:
            indices = list(range(len(first_kinds)))
        if [first_kinds[i] for i in indices] != kinds:
            continue
        subsets = {"all": list(range(len(kinds))), **{kind: [i for i, k in enumerate(kinds) if k == kind]
                                                       for kind in dict.fromkeys(kinds)}}
        for name, subset in subsets.items():
            if name == "all" and len(subsets) == 2:  # one kind: "all" is that kind
                continue
            difference = paired_difference([bool(exact[i]) for i in subset],
                                           [bool(first_exact[indices[i]]) for i in subset])
            lines.append(f"| {result['row']} ({result['steps']} steps) | {name} | {len(subset)} | "
                         f"{paired_cells(difference)} |")
    if not lines:
        return []
    return ["", f"Each row against the first ({first['row']}, {first['steps']} steps) on the same examples, exact "
            "success (paired):", "", "| row | kind | n | difference (95% CI) | only this row / only the first | "
            "McNemar p |", "|---|---|---:|---|---|---:|", *lines]


def _partial_cells(result: dict) -> str:
    from mtu.toyworld.metrics import attribute_cell, interval_cell

    partial = result.get("partial")
    if not partial:
        return "- | -"
    return f"{attribute_cell(partial)} | {interval_cell(partial['preserved'])}"


BINDING_OUTCOMES = ("bound", "spilled", "kept", "other")


def recolour_binding(example, output) -> str:
    """Where a recolouring's output puts the asked colour, read under each input shape's pixels (majority palette
    colour): "bound" (the named shape takes it, every other shape keeps its own colour), "spilled" (the named shape
    takes it and another shape's colour changes too), "kept" (the named shape keeps its own colour), "other" (it
    shows neither). Separates binding the colour to the named shape from committing to a change at all."""
    from recolour_word_probe import read_colour

    edit = example.edit
    if edit.kind != "recolour":
        raise ValueError(f"`example` must be a recolouring, got a {edit.kind!r} edit.")
    asked = asked_colour(edit)
    named = read_colour(output, edit.shape)
    if named == edit.shape.colour:
        return "kept"
    if named != asked:
        return "other"
    others = [shape for shape in edit.before.shapes if shape != edit.shape]
    return "bound" if all(read_colour(output, shape) == shape.colour for shape in others) else "spilled"


def binding_outcomes(examples, outputs) -> list[list]:
    """[outcome, whether the scene holds another shape] of each recolouring among `examples` (`recolour_binding`);
    none for a null-edit row (`mtu-copy`), whose examples ask for no change."""
    return [[recolour_binding(ex, out), len(ex.edit.before.shapes) > 1] for ex, out in zip(examples, outputs)
            if ex.edit.kind == "recolour" and ex.edit.after != ex.edit.before]


def binding_rows(results: list[dict]) -> list[str]:
    """Table lines: each row's `binding_outcomes` (all of a recolour row's examples, a fifth or so of a row of every
    kind), over all its recolourings and over those whose scene holds another shape (where spill is possible), with
    Wilson intervals."""
    from mtu.stats import wilson_interval

    lines = ["| row | steps | scenes | " + " | ".join(BINDING_OUTCOMES) + " |", "|---|---:|---|" + "---|" * 4]
    for result in results:
        outcomes = result.get("binding")
        if not outcomes:
            continue
        crowded = [outcome for outcome, other_shapes in outcomes if other_shapes]
        for name, subset in (("all", [outcome for outcome, _ in outcomes]), ("with another shape", crowded)):
            cells = []
            for outcome in BINDING_OUTCOMES:
                hits = sum(o == outcome for o in subset)
                low, high = wilson_interval(hits, len(subset))
                cells.append(f"{hits / len(subset):.3f} ({low:.3f}-{high:.3f})")
            lines.append(f"| {result['row']} | {result['steps']} | {name} ({len(subset)}) | " + " | ".join(cells) + " |")
    return lines


def rescore(folder: Path) -> list[dict]:
    """Adds the partial metrics and the recolourings' `binding_outcomes` to an earlier run's results from its saved
    outputs (OUT/ROW.npz)."""
    from mtu.toyworld.evaluate import evaluation_set

    data = json.loads((folder / "diagnosis.json").read_text())
    for result in data["results"]:
        outputs = np.load(folder / f"{result['row']}.npz")["normal"]
        examples = row_examples(result["row"], evaluation_set("edit", len(outputs)))
        result["partial"] = partial_summary(examples, list(outputs))
        result["binding"] = binding_outcomes(examples, outputs)
    (folder / "diagnosis.json").write_text(json.dumps(data, indent=1))
    return data["results"]


def check_adapter_argument(parser, adapter: str) -> None:
    """Refuses `--adapter` in one line (`parser.error`) unless it is an MTU adapter folder."""
    if not (Path(adapter) / "mtu_config.json").is_file():
        parser.error(f"--adapter: expected an MTU adapter folder (holding mtu_config.json), got {adapter!r}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="mtu,full")
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--full-lr", type=float, default=2e-4)
    parser.add_argument("--text-lr", type=float, default=3e-4, help="text encoder's rate in rows mtu-text and mtu-text-words")
    parser.add_argument("--eval-count", type=int, default=128)
    parser.add_argument("--text-guidance", type=float, default=7.5)
    parser.add_argument("--image-guidance", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--base", default="", help="base pipeline folder (default: the shipped toy base)")
    parser.add_argument("--adapter", default="", help="trained MTU adapter folder every MTU row starts from "
                        "(with --steps 0: scored untrained)")
    parser.add_argument("--out", default="edit-diagnosis")
    parser.add_argument("--tables", default="", help="comma-separated earlier OUT folders: print their joined table "
                        "(adding partial metrics from the saved outputs), each row paired with the first, and exit")
    args = parser.parse_args(argv)
    if args.tables:
        results = [result for folder in args.tables.split(",") for result in rescore(Path(folder))]
        print("\n".join([table(results), *paired_rows(results), "", *binding_rows(results)]))
        return 0
    rows = [row for row in args.rows.split(",") if row]
    unknown = [row for row in rows if row not in ROWS]
    if unknown:
        parser.error(f"--rows: unknown row(s) {unknown}; choose from {ROWS}")
    if args.adapter:
        check_adapter_argument(parser, args.adapter)
    if args.adapter and "full" in rows:
        parser.error(f"--adapter: row full does not start from an MTU adapter, got --rows {args.rows}")
    if args.steps < 0 or (args.steps == 0 and not args.adapter):
        parser.error(f"--steps: expected a positive number of steps (0 only with --adapter), got {args.steps}")
    if args.threads:
        torch.set_num_threads(args.threads)
    from mtu.toyworld.components import shipped_base
    from mtu.toyworld.evaluate import evaluation_set

    base = args.base or str(shipped_base())
    examples = evaluation_set("edit", args.eval_count)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for row in rows:
        result = run_row(row, args, examples, base)
        arrays = result.pop("_arrays")
        np.savez_compressed(out / f"{row}.npz", **arrays)
        results.append(result)
        (out / "diagnosis.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
        print(table(results[-1:]), file=sys.stderr, flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
