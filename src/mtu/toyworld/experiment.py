"""One toy-world experiment: train a method on some tasks with `mtu train`'s trainer, then score every task on
held-out examples. The demo runs one (MTU on four tasks); the quality benchmark runs the paper's table rows."""

from __future__ import annotations

from .evaluate import MAIN_METRIC, TASKS, Example, evaluation_set, generate_outputs, score, score_examples


def toyworld_train_config(base: str, run_dir, tasks=TASKS, method: str = "mtu", mtu: dict | None = None,
                          steps: int = 500, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
                          log_with: str = "tensorboard", task_weights: dict | None = None,
                          router_lr: float | None = 1e-4, **model_fields):
    """The `TrainConfig` of a toy-world run (what `mtu train` would take as YAML): toy-world sources of `tasks`
    at 32 px, Adam with warm-up and cosine decay, no intermediate checkpoints. Tasks take turns within each batch,
    or with `task_weights` ({task: mixing ratio}, default 1) each sample's task is drawn by those ratios.
    MTU's routers and task embeddings train at `router_lr` (the paper's 1e-4): at the toy world's larger `lr` their
    ReLU units die and every task gets the same expert weights (docs/DIAGNOSIS.md, "The routers die")."""
    from ..training import TrainConfig
    from ..training.config import ModelConfig, OptimConfig

    return TrainConfig(
        output_dir=str(run_dir),
        model=ModelConfig(base=base, method=method, mtu=dict(mtu or {}), **model_fields),
        data=[{"format": "toyworld", "task": task, "count": 20_000, "seed": seed, "resolution": 32,
               "weight": (task_weights or {}).get(task, 1.0)} for task in tasks],
        optim=OptimConfig(optimizer="adam", lr=lr, schedule="cosine", warmup_steps=min(50, steps),
                          router_lr=router_lr if method == "mtu" else None),
        max_steps=steps, batch_size=batch_size, seed=seed,
        task_sampling="weighted" if task_weights else "stratified",
        checkpoint_every=0, keep_checkpoints=1, log_with=log_with, log_every=max(1, min(10, steps)),
    )


def pipeline_for(model, base: str):
    """An `MTUPipeline` around an in-memory trained model (any method: all are `TaskModel`s), with the base's
    VAE, text encoder, tokenizer and scheduler."""
    from ..pipelines import MTUPipeline

    pipe = MTUPipeline.from_base(base, model)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def choose_guidance(pipe, task: str, count: int = 32, seed: int = 0) -> tuple[dict, list[dict]]:
    """The (text, image) guidance pair of a dual-guidance task (edit, inpaint) that scores best on `count`
    validation examples (training-split scenes, never the held-out ones): the task's main metric first, then
    fidelity. The grid is the paper's default of each scale, 3 and (image) 5; the defaults win ties.
    Returns (call kwargs, one row per pair tried); ({}, []) for tasks without dual guidance.
    """
    defaults = pipe.task_defaults(task)
    if defaults.guidance != "dual":
        return {}, []
    examples = evaluation_set(task, count, split="validation")
    rows = []
    for text in dict.fromkeys((defaults.guidance_scale, 3.0)):
        for image in dict.fromkeys((defaults.image_guidance_scale, 3.0, 5.0)):
            kwargs = {"guidance_scale": text, "image_guidance_scale": image}
            rows.append({**kwargs, **score(examples, generate_outputs(pipe, examples, seed, **kwargs))})
    best = max(rows, key=lambda row: (row[MAIN_METRIC[task]], row.get("fidelity_psnr", 0.0)))
    return {"guidance_scale": best["guidance_scale"], "image_guidance_scale": best["image_guidance_scale"]}, rows


def score_tasks(pipe, examples: dict[str, list[Example]], seed: int = 0,
                guidance: dict[str, dict] | None = None) -> tuple[dict, dict]:
    """({task: scores}, {task: outputs}) of `pipe` on each task's held-out examples; `guidance` gives a task's
    sampling arguments (default: the pipeline's per-task defaults)."""
    scores, outputs = {}, {}
    for task, task_examples in examples.items():
        outputs[task] = generate_outputs(pipe, task_examples, seed=seed, **(guidance or {}).get(task, {}))
        scores[task] = score(task_examples, outputs[task])
    return scores, outputs


def train_and_score(config, examples: dict[str, list[Example]], seed: int = 0, tune_guidance: int = 0,
                    records: bool = False, guidance: dict[str, dict] | None = None) -> dict:
    """Trains `config` and scores the trained model on `examples` (only the tasks it was trained on).

    `tune_guidance`: when > 0, each dual-guidance task's guidance is first chosen on that many validation
    examples (`choose_guidance`), then used on `examples`; otherwise `guidance` ({task: call kwargs}, pairs chosen
    before) is used where given, the pipeline's defaults elsewhere. `records`: also keep the per-example scores.

    Returns {"scores": {task: scores}, "outputs": {task: images}, "summary": the trainer's summary,
    "model": the trained model (EMA weights if any, on CPU), "trainable": trainable parameter count,
    "guidance": {task: {"chosen": call kwargs, "tried": rows}} for the tuned tasks (rows empty for a task whose
    pair `guidance` gave)}; with `records` also
    "records": {task: `evaluate.score_examples`} (per-example main metric, example records and their summary).
    """
    from ..training.trainer import Trainer

    trainer = Trainer(config)
    summary = trainer.train()
    model, trainable = trainer.trained_model(ema=True), trainer.num_trainable_parameters()
    del trainer
    pipe = pipeline_for(model, config.model.base)
    tasks = {task: examples[task] for task in model.task_names if task in examples}
    given, guidance = guidance or {}, {}
    if tune_guidance:
        for task in tasks:
            chosen, tried = choose_guidance(pipe, task, tune_guidance, seed)
            if tried:
                guidance[task] = {"chosen": chosen, "tried": tried}
    else:
        guidance = {task: {"chosen": dict(given[task]), "tried": []} for task in tasks if task in given}
    scores, outputs = score_tasks(pipe, tasks, seed, {task: value["chosen"] for task, value in guidance.items()})
    result = {"scores": scores, "outputs": outputs, "summary": summary, "model": model, "trainable": trainable,
              "guidance": guidance}
    if records:
        result["records"] = {task: score_examples(tasks[task], outputs[task], seed) for task in tasks}
    return result


def score_base(base: str, examples: list[Example], seed: int = 0, num_experts: int = 4) -> tuple[dict, list]:
    """(scores, outputs) of the base model itself on text-to-image `examples`, through the same `MTUPipeline`
    code as trained models: an upcycled model at `init="preserve"` computes exactly the base UNet.
    `evaluate.score_examples(examples, outputs, seed)` gives the per-example scores behind the means."""
    from ..upcycling import MTUConfig, load_base_unet, upcycle

    model = upcycle(load_base_unet(base), MTUConfig(tasks=list(TASKS), num_experts=num_experts))
    scores, outputs = score_tasks(pipeline_for(model, base), {"t2i": examples}, seed)
    return scores["t2i"], outputs["t2i"]
