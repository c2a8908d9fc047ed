"""`mtu` command line: upcycle, inspect, fold, demo. Bad input prints one line and exits with status 2; a bug prints
its traceback and exits with status 1."""

from __future__ import annotations

import argparse
import errno
import json
import sys
import traceback
from fractions import Fraction

from .progress import step

DTYPES = ("float32", "float16", "bfloat16")
VARIANT_HELP = "weights variant of the base, e.g. fp16 for unet/diffusion_pytorch_model.fp16.safetensors"
BASE_CONFIG_HELP = ("for a single-file --base: a local diffusers pipeline folder (unet/config.json) or UNet folder "
                    "of its architecture")
OVERWRITE_HELP = ("write into an --out folder that holds other files (only this command's files are replaced there; "
                  "nothing else is removed)")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        raise SystemExit(_fail(f"{self.prog}: {message}"))


def _fail(message: str) -> int:
    print(f"mtu: error: {message}", file=sys.stderr)
    return 2


def _granularity(text: str) -> float:
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"invalid granularity {text!r}; give a number such as 0.25 or 1/4")


def _dtype(name: str | None):
    import torch

    return None if name is None else getattr(torch, name)


def cmd_upcycle(args) -> int:
    from .outputs import claim_output
    from .upcycling import MTUConfig, load_base_unet, upcycle
    from .upcycling.bases import check_base_spec

    config = MTUConfig(tasks=args.tasks, num_experts=args.experts, granularity=args.granularity, top_k=args.top_k,
                       router_hidden_size=args.router_hidden_size, task_embedding_size=args.task_embedding_size,
                       init=args.init, seed=args.seed,
                       target_blocks=args.target_blocks.split(",") if args.target_blocks else None)
    check_base_spec(args.base, variant=args.variant, single_file_config=args.base_config)
    # Only this command's own earlier output is replaced without --overwrite: a trained adapter looks like an
    # upcycled one, so no folder is recognised by its files alone.
    output = claim_output(args.out, command="upcycle", overwrite=args.overwrite, inputs={"base (`--base`)": args.base})
    with step(f"loading base UNet from {args.base}"):
        unet = load_base_unet(args.base, torch_dtype=_dtype(args.dtype), variant=args.variant,
                              single_file_config=args.base_config)
    with step("fingerprinting the base weights and upcycling"):
        model = upcycle(unet, config, base_variant=args.variant)
    with step(f"saving the adapter to {args.out}"):
        output.write(model.save_pretrained)
    print(f"upcycled {sum(1 for _ in model.mtu_modules()) - 1} blocks into {config.num_experts} experts "
          f"(G={config.granularity:g}) for tasks {', '.join(config.tasks)}; adapter in {args.out}")
    return 0


def cmd_inspect(args) -> int:
    from .inspection import cost_report, format_report
    from .upcycling.serialization import (WEIGHTS_NAME, adapter_directory, adapter_shapes, check_adapter_shapes,
                                          read_adapter_config)

    record = read_adapter_config(args.dir)
    config = record["config"]
    weights = adapter_directory(args.dir) / WEIGHTS_NAME
    if weights.exists():  # a config over weights it does not make (a hand-edited N) must not be reported as is
        check_adapter_shapes(record, adapter_shapes(args.dir), weights)
    with step("counting parameters and FLOPs (meta device, no weights loaded)"):
        report = cost_report(config, record["base"]["unet_config"], (args.latent_size, args.latent_size))
    report["adapter"] = {"config": config.to_dict(), "base": record["base"].get("name_or_path"),
                         "base_fingerprint": record["base"].get("fingerprint"), "dtype": record.get("dtype"),
                         "weights_bytes": weights.stat().st_size if weights.exists() else None}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"adapter {args.dir}: tasks {', '.join(config.tasks)}; N={config.num_experts}, G={config.granularity:g}, "
          f"top_k={config.top_k}, init={config.init}; base {record['base'].get('name_or_path')}")
    print(format_report(report))
    return 0


def cmd_fold(args) -> int:
    from pathlib import Path

    from .errors import InputError
    from .outputs import claim_output
    from .upcycling import load_mtu
    from .upcycling.fold import is_folded_unet
    from .upcycling.serialization import adapter_directory, read_adapter_config

    from .training.export import is_checkpoint_folder, run_final_folder
    from .training.methods import BASELINE_RECORD

    path = run_final_folder(Path(args.dir).expanduser(), "dir")  # a run folder stands for its final/
    if is_checkpoint_folder(path) or (path / BASELINE_RECORD).is_file():
        return _fold_trained(args, path)
    record = read_adapter_config(args.dir)  # every check that needs no weights, before the base is loaded
    config = record["config"]
    if args.task not in config.tasks:
        raise InputError(f"unknown task {args.task!r}; the adapter was upcycled for tasks {config.tasks}.",
                         field="--task")
    active = config.top_k or config.num_experts
    if active * config.granularity > 1 + 1e-9:
        raise InputError(f"{adapter_directory(args.dir)} cannot be folded: {active} active experts x G="
                         f"{config.granularity:g} are wider than the base FFN (a stock UNet needs top_k x G <= 1).")
    inputs = {"input adapter": adapter_directory(args.dir), "base (`--base`)": args.base or record["base"].get(
        "name_or_path")}
    output = claim_output(args.out, command="fold", overwrite=args.overwrite, inputs=inputs, recognize=is_folded_unet)
    with step(f"loading the MTU model from {args.dir}"):
        model = load_mtu(args.dir, base=args.base, allow_base_mismatch=args.allow_base_mismatch, variant=args.variant,
                         single_file_config=args.base_config)
    return _save_folded(model, args, output)


def _save_folded(model, args, output) -> int:
    with step(f"folding task {args.task!r} into a stock UNet2DConditionModel"):
        folded = model.fold(args.task)
    with step(f"saving to {args.out}"):
        output.write(lambda folder: folded.save_pretrained(folder, safe_serialization=True))
    print(f"folded task {args.task!r}: {sum(p.numel() for p in folded.parameters()):,} parameters, "
          f"{folded.config.in_channels} input channels; load it with "
          f"UNet2DConditionModel.from_pretrained({args.out!r})")
    return 0


def _fold_trained(args, path) -> int:
    """`mtu fold` of a trained baseline's folder (`full`, `lora`, `ia3`: the task's adapter merged) or of a training
    checkpoint of any method."""
    from .errors import InputError
    from .outputs import claim_output
    from .training.export import checkpoint_run_config, is_checkpoint_folder, model_from_checkpoint
    from .training.methods import load_baseline, read_baseline_record

    checkpoint = is_checkpoint_folder(path)
    tasks = checkpoint_run_config(path).tasks if checkpoint else read_baseline_record(path)["tasks"]
    if args.task not in tasks:
        raise InputError(f"unknown task {args.task!r}; {str(path)!r} was trained for tasks {tasks}.", field="--task")
    output = claim_output(args.out, command="fold", overwrite=args.overwrite, inputs={"model": path})
    with step(f"loading the trained model from {path}"):
        model = model_from_checkpoint(path, base=args.base, variant=args.variant) if checkpoint else \
            load_baseline(path, base=args.base, variant=args.variant)
    return _save_folded(model, args, output)


def cmd_export(args) -> int:
    from .export.task_export import export_task

    folder, record = export_task(args.dir, args.task, args.format, args.out, dtype=args.dtype,
                                 overwrite=args.overwrite, base=args.base, variant=args.variant)
    if args.format == "onnx":
        note = "; the base's safety checker is not exported" if record.get("safety_checker") else ""
        print(f"exported task {args.task!r} as ONNX ({', '.join(record['parts'])}, {args.dtype}) to {folder}; "
              f"sample it with mtu.export.OnnxTaskPipeline({args.out!r}){note}")
    else:
        print(f"exported task {args.task!r} as a stock {record['pipeline']} ({args.dtype}) to {folder}; load it with "
              f"DiffusionPipeline.from_pretrained({args.out!r}) and call it with {record['call_kwargs']}")
    return 0


def cmd_train(args) -> int:
    from .errors import InputError
    from .training import load_train_config, train

    if args.config is None:  # a run needs its data sources, which only a run file lists
        raise InputError("`mtu train` needs a run file: mtu train --config RUN.yaml [--section.field value ...] "
                         "(see the README's training section, or src/mtu/toyworld/mtu_model/train.yaml).",
                         field="--config")
    config = load_train_config(args.config, args.overrides)
    summary = train(config, overwrite=args.overwrite)
    losses = [row["loss"] for row in summary["history"]]
    print(f"trained {summary['steps']} steps; last loss {losses[-1]:.4f}; skipped non-finite steps "
          f"{summary['nonfinite_skipped']}; weights in {summary['final']}" if losses else
          f"nothing to do: the run is already at step {summary['steps']}; weights in {summary['final']}")
    return 0


def _config_sources(config: str) -> list:
    """The `data` list of a training YAML, as written (each entry is checked by `source_from_dict`)."""
    from pathlib import Path

    import yaml

    from .errors import InputError
    from .training.config import read_yaml

    path = Path(config)
    if not path.is_file():
        raise InputError(f"file {config!r} does not exist.", field="--config")
    try:
        tree = read_yaml(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise InputError(f"{config} is not a readable YAML file: {' '.join(str(error).split())}",
                         field="--config") from None
    if not isinstance(tree, dict) or not isinstance(tree.get("data"), list) or not tree["data"]:
        data = tree.get("data") if isinstance(tree, dict) else None
        found = "an empty file" if tree is None else f"a {type(tree).__name__} file" if not isinstance(tree, dict) \
            else "no `data`" if data is None else "an empty list" if data == [] else f"a {type(data).__name__}"
        raise InputError(f"{config}: `data` must be a non-empty list of sources, got {found}.", field="--config")
    from .plugins import load_plugins
    from .training.config import resolve_config_paths

    tree = resolve_config_paths(tree, path.parent)  # relative paths: from the run file's folder
    load_plugins(tree.get("plugins"))  # the run's own tasks and schemas, before its sources are checked
    return tree["data"]


FLAG_FIELDS = ("task", "format", "path", "schema", "columns")


def _flag_source(args) -> dict:
    """The one source that `--task --format [--path --schema --columns --option KEY=VALUE ...]` describe."""
    import yaml

    from .errors import InputError

    missing = [flag for flag in ("task", "format") if getattr(args, flag) is None]
    if missing:
        raise InputError(f"give --config RUN.yaml, or --task and --format with the format's fields (missing: "
                         f"{', '.join('--' + m for m in missing)}).")
    entry = {flag: getattr(args, flag) for flag in ("task", "format", "path", "schema") if getattr(args, flag)}
    if args.columns:
        entry["columns"] = _key_values(args.columns.split(","), "--columns", "role=column pairs separated by commas")
    for key, value in _key_values(args.option or [], "--option", "KEY=VALUE").items():
        if key in FLAG_FIELDS:
            raise InputError(f"give {key!r} as --{key}, got {key}={value}.", field="--option")
        entry[key] = yaml.safe_load(value) if value else value  # numbers and booleans as YAML reads them
    return entry


def _key_values(items: list[str], flag: str, what: str) -> dict:
    from .errors import InputError

    if not all("=" in item and item.split("=", 1)[0] for item in items):
        raise InputError(f"must be {what}, got {','.join(items)!r}.", field=flag)
    return dict(item.split("=", 1) for item in items)


def _flag_error(error):
    """A source error in the terms of the flags that gave the field (`--schema`, `--option count`)."""
    from .errors import InputError

    field = (error.field or "").split(".")[0]
    if not field:
        return error
    name = f"--{field}" if field in FLAG_FIELDS else f"--option {field}"
    return InputError(error.message, field=name + error.field[len(field):])


def cmd_data_validate(args) -> int:
    from .data import format_validation, source_from_dict, validate_source
    from .errors import InputError

    entries = _config_sources(args.config) if args.config else [_flag_source(args)]
    reports = []
    for number, entry in enumerate(entries):
        try:  # every entry is checked before any source is read; an error names its place (data[1].schema)
            entries[number] = source_from_dict(entry)
        except InputError as error:
            raise (error.within(f"data[{number}]") if args.config else _flag_error(error)) from None
    for number, source in enumerate(entries):
        try:
            reports.append(validate_source(source, limit=args.limit))
        except InputError as error:
            raise (error.within(f"data[{number}]") if args.config else error) from None
    if args.json:
        print(json.dumps(reports, indent=2, default=str))
    else:
        print("\n\n".join(format_validation(report) for report in reports))
    return 0 if all(report["ok"] for report in reports) else 1


def cmd_data_schemas(args) -> int:
    from .data.schemas import schemas_markdown

    print(schemas_markdown())
    return 0


def cmd_cache(args) -> int:
    from .errors import InputError
    from .training import load_train_config
    from .training.cache import build_cache

    if args.epochs < 1:  # checked before the config and the models are read
        raise InputError(f"must be an integer >= 1, got {args.epochs}.", field="--epochs")
    config = load_train_config(args.config, args.overrides)
    out = build_cache(config, args.out, epochs=args.epochs, text=args.text, overwrite=args.overwrite)
    print(f"cached {len(config.data)} sources x {args.epochs} epochs in {out}; train with --cache_dir {out}")
    return 0


def cmd_demo(args) -> int:
    from .demo import DemoConfig, run_demo

    return run_demo(DemoConfig(out=args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                               eval_count=args.eval_count, num_experts=args.experts, seed=args.seed,
                               base=args.base, tune_count=args.tune_count, overwrite=args.overwrite))


def cmd_selfcheck(args) -> int:
    from .selfcheck import run_selfcheck

    return run_selfcheck(args.out, args.arch, overwrite=args.overwrite)


def cmd_toyworld_pretrain(args) -> int:
    from dataclasses import fields

    from .errors import InputError
    from .training.config import parse_overrides
    from .toyworld.pretrain import PretrainConfig, pretrain

    values = parse_overrides(args.overrides)
    known = {f.name for f in fields(PretrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"unknown pretrain option(s) {', '.join('--' + k for k in unknown)}; "
                         f"known: {', '.join('--' + k for k in sorted(known))}")
    record = pretrain(PretrainConfig(**values), overwrite=args.overwrite)
    print(f"t2i faithfulness {record['evaluation']['faithfulness']:.3f} on {record['evaluation']['count']} "
          f"held-out captions; model in {values.get('out', PretrainConfig.out)}")
    return 0


def cmd_toyworld_package(args) -> int:
    from .toyworld.packaging import CARD_FIELDS, package_model

    recipe = package_model(args.run, out=args.out, eval_count=args.eval_count, tune_count=args.tune_count,
                           seed=args.seed, overwrite=args.overwrite)
    for task, scores in recipe["scores"].items():
        field = CARD_FIELDS[task][0]  # the task's main metric
        value = scores[field]
        print(f"{task}: {field} {value['value']:.3f} [{value['low']:.3f}, {value['high']:.3f}] on {value['count']} "
              f"held-out examples")
    print(f"packaged model in {recipe['folder']} ({recipe['seconds']:.0f} s)")
    return 0


PLUGIN_HELP = ("a module that registers your own tasks, schemas or formats (my_package.my_task, or a .py file), "
               "imported before anything is checked; repeat for several")


def _plugin_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE", help=PLUGIN_HELP)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mtu", description="Multi-Task Upcycling for diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    up = sub.add_parser("upcycle", help="turn a base UNet into an MTU adapter")
    up.add_argument("--base", required=True, help="pipeline or UNet folder, single-file .safetensors checkpoint, "
                    "hub id, or random:<sd15|sdxl|tiny>")
    up.add_argument("--tasks", default="t2i,edit,sr,inpaint", help="comma-separated task names")
    up.add_argument("--experts", type=int, default=4, help="number of experts N")
    up.add_argument("--granularity", type=_granularity, default=None, help="G = d_expert/d_ffn (default 1/N)")
    up.add_argument("--top-k", type=int, default=None, help="experts kept per task (default all)")
    up.add_argument("--init", default="preserve", help="preserve | shard")
    up.add_argument("--router-hidden-size", type=int, default=64)
    up.add_argument("--task-embedding-size", type=int, default=64)
    up.add_argument("--target-blocks", default=None, help="comma-separated block names/patterns (default all)")
    up.add_argument("--seed", type=int, default=0)
    up.add_argument("--dtype", choices=DTYPES, default=None, help="dtype to load the base in")
    up.add_argument("--variant", default=None, help=VARIANT_HELP)
    up.add_argument("--base-config", "--base_config", dest="base_config", default=None, help=BASE_CONFIG_HELP)
    up.add_argument("--out", required=True, help="adapter folder to write")
    up.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    _plugin_argument(up)
    up.set_defaults(func=cmd_upcycle)

    ins = sub.add_parser("inspect", help="parameters and FLOPs of an adapter vs its base")
    ins.add_argument("dir")
    ins.add_argument("--latent-size", type=int, default=64, help="latent height = width for FLOPs (64: SD1.5 512px)")
    ins.add_argument("--json", action="store_true", help="print JSON")
    ins.set_defaults(func=cmd_inspect)

    fo = sub.add_parser("fold", help="export one task as a stock diffusers UNet")
    fo.add_argument("dir", help="an MTU adapter folder, a trained run's final/ of any method (full, lora, ia3: the "
                                "task's adapter is merged), a run folder or a checkpoint folder")
    fo.add_argument("--task", required=True)
    fo.add_argument("--out", required=True)
    fo.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    fo.add_argument("--base", default=None, help="base to use instead of the recorded one")
    fo.add_argument("--variant", default=None, help=VARIANT_HELP + " (default: the one the adapter records)")
    fo.add_argument("--base-config", "--base_config", dest="base_config", default=None,
                    help=BASE_CONFIG_HELP + " (default: the architecture the adapter records)")
    fo.add_argument("--allow-base-mismatch", action="store_true")
    _plugin_argument(fo)
    fo.set_defaults(func=cmd_fold)

    ex = sub.add_parser("export", help="one task as a stock diffusers pipeline or as ONNX models (onnxruntime)")
    ex.add_argument("dir", help="MTU adapter or pipeline folder, run folder, training checkpoint, or shipped name")
    ex.add_argument("--task", required=True)
    ex.add_argument("--format", required=True, help="diffusers (the task's stock pipeline) | onnx (SD 1.x/2.x)")
    ex.add_argument("--dtype", default="fp32", help="fp32 | fp16")
    ex.add_argument("--out", required=True, help="folder to write")
    ex.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    ex.add_argument("--base", default=None, help="base pipeline to use instead of the recorded one")
    ex.add_argument("--variant", default=None, help=VARIANT_HELP + " (default: the one the model records)")
    ex.set_defaults(func=cmd_export)

    tr = sub.add_parser("train", help="multi-task training (accelerate: also under `accelerate launch`)",
                        description="Overrides: --section.field value (e.g. --optim.lr 2e-4 --max_steps 100).")
    tr.add_argument("--config", default=None, help="YAML run file (required: it lists the data sources)")
    tr.add_argument("--overwrite", action="store_true", help="write into an output_dir that holds other files "
                    "(only the run's own files are written there; nothing else is removed)")
    _plugin_argument(tr)
    tr.set_defaults(func=cmd_train, takes_overrides=True)

    from .pipelines.generate import add_generate_arguments, run_generate

    gen = sub.add_parser("generate", help="run one task of a trained MTU model (MTUPipeline)")
    _plugin_argument(add_generate_arguments(gen)).set_defaults(func=run_generate)

    from .chat.app import add_chat_arguments, run_chat

    chat = sub.add_parser("chat", help="the chat of the paper's Fig. 1: one model answers every request (Gradio)")
    _plugin_argument(add_chat_arguments(chat)).set_defaults(func=run_chat)

    from .analysis.commands import add_analyze_parser

    add_analyze_parser(sub)

    from .evaluation.commands import add_eval_parser

    add_eval_parser(sub)

    ca = sub.add_parser("cache", help="encode a run's data with the VAE once (and text, with --text)")
    ca.add_argument("--config", required=True, help="the training YAML")
    ca.add_argument("--out", required=True, help="cache folder; train with --cache_dir OUT")
    ca.add_argument("--epochs", type=int, default=1, help="epochs of per-epoch random choices to cache")
    ca.add_argument("--text", action="store_true", help="also cache text embeddings (small prompt sets)")
    ca.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    _plugin_argument(ca)
    ca.set_defaults(func=cmd_cache, takes_overrides=True)

    data = sub.add_parser("data", help="data sources")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    val = data_sub.add_parser("validate", help="read a source as training would and report what was found")
    val.add_argument("--config", default=None, help="a training YAML: validate all its `data` sources")
    val.add_argument("--task")
    val.add_argument("--format", help="a registered source format: folder, hf, webdataset, toyworld, or a plug-in's")
    val.add_argument("--path")
    val.add_argument("--schema")
    val.add_argument("--columns", default=None, help="role=column,... overrides")
    val.add_argument("--option", action="append", metavar="KEY=VALUE",
                     help="another field of the format's source (e.g. count=200 seed=1 for toyworld); repeatable")
    val.add_argument("--limit", type=int, default=None, help="check only the first N samples")
    val.add_argument("--json", action="store_true")
    _plugin_argument(val)
    val.set_defaults(func=cmd_data_validate)
    schemas = data_sub.add_parser("schemas", help="every registered schema's roles and the keys each reads (markdown)")
    _plugin_argument(schemas)
    schemas.set_defaults(func=cmd_data_schemas)

    from .demo import DEMO_GUIDANCE, DemoConfig

    demo = sub.add_parser("demo", help="the embedded end-to-end demo on the toy world (make demo)",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    demo.add_argument("--out", default=DemoConfig.out, help="report folder")
    demo.add_argument("--steps", type=int, default=DemoConfig.steps, help="training steps")
    demo.add_argument("--batch-size", type=int, default=DemoConfig.batch_size, help="samples per step")
    demo.add_argument("--lr", type=float, default=DemoConfig.lr, help="peak learning rate")
    demo.add_argument("--eval-count", type=int, default=DemoConfig.eval_count, help="held-out examples per task")
    demo.add_argument("--experts", type=int, default=DemoConfig.num_experts, help="experts N")
    demo.add_argument("--seed", type=int, default=DemoConfig.seed, help="seed")
    demo.add_argument("--tune-count", type=int, default=DemoConfig.tune_count,
                      help="validation examples on which to choose edit/inpaint guidance again (0: the pairs chosen "
                           "for the default recipe, " + ", ".join(
                               f"{task} {pair['guidance_scale']:g}/{pair['image_guidance_scale']:g}"
                               for task, pair in DEMO_GUIDANCE.items()) + ")")
    demo.add_argument("--base", default=DemoConfig.base,
                      help="base pipeline folder; None: the shipped toy-world base")
    demo.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    demo.set_defaults(func=cmd_demo)

    check = sub.add_parser("selfcheck", help="upcycle a real architecture at random init and check invariants")
    check.add_argument("--out", default="mtu-selfcheck", help="folder for the outputs")
    check.add_argument("--arch", default="sd15", choices=("sd15", "tiny"))
    check.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    check.set_defaults(func=cmd_selfcheck)

    toy = sub.add_parser("toyworld", help="the embedded toy world")
    toy_sub = toy.add_subparsers(dest="toyworld_command", required=True, parser_class=_Parser)
    pre = toy_sub.add_parser("pretrain", help="train the tiny base model from scratch (the shipped recipe)",
                             description="Options: --field value for any PretrainConfig field, e.g. --out DIR "
                                         "--steps 5000 --seed 0.")
    pre.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    pre.set_defaults(func=cmd_toyworld_pretrain, takes_overrides=True)
    pack = toy_sub.add_parser("package", help="score a trained toy-world MTU run and write it as the shipped model",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pack.add_argument("--run", required=True, help="the `mtu train` output_dir (config.yaml, final/), or one of its "
                      "checkpoints, RUN/checkpoints/checkpoint-N (its EMA weights; a run that has not ended)")
    pack.add_argument("--out", default=None, help="folder to write (default: the shipped model's, in the package)")
    pack.add_argument("--eval-count", type=int, default=256, help="held-out examples per task for the scores")
    pack.add_argument("--tune-count", type=int, default=32,
                      help="validation examples on which to choose edit/inpaint guidance again (0: the pairs chosen "
                           "for the default recipe, " + ", ".join(
                               f"{task} {pair['guidance_scale']:g}/{pair['image_guidance_scale']:g}"
                               for task, pair in DEMO_GUIDANCE.items()) + ")")
    pack.add_argument("--seed", type=int, default=0, help="seed of the sampling noise and the intervals")
    pack.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    _plugin_argument(pack)
    pack.set_defaults(func=cmd_toyworld_package)
    for command in _commands(parser):  # every command knows a user's tasks (issue 15), those added later too
        if "--plugin" not in command._option_string_actions:
            _plugin_argument(command)
    return parser


def _commands(parser: argparse.ArgumentParser):
    """The parsers of every runnable command (`mtu train`, `mtu data validate`, ...), depth first."""
    actions = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not actions:
        yield parser
    for action in actions:
        for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
            yield from _commands(child)


# OSErrors about the user's own files: one line naming the path. Any other OSError is a bug (traceback).
USER_FILE_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)
USER_FILE_ERRNOS = (errno.ENOSPC, errno.EROFS)
BUG_LINE = "mtu: this is a bug in mtu, not in your input; please report it with the traceback above"


def _file_error_line(error: OSError) -> str:
    """`No such file or directory: 'x.png'`, or the message itself when the error names no file."""
    if error.filename is None:
        return str(error)
    target = f" -> {error.filename2!r}" if error.filename2 is not None else ""
    return f"{error.strerror or type(error).__name__}: {error.filename!r}{target}"


def main(argv: list[str] | None = None) -> int:
    """Runs one command. Bad input (`mtu.InputError`) and errors about the user's files print one line and exit 2;
    anything else is a bug: its traceback, one line saying so, exit 1."""
    from .errors import InputError

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "takes_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = unknown
    try:
        from .plugins import load_plugins

        load_plugins(getattr(args, "plugin", None) or [], field="--plugin")
        return args.func(args)
    except InputError as error:
        return _fail(str(error))
    except OSError as error:
        if not isinstance(error, USER_FILE_ERRORS) and error.errno not in USER_FILE_ERRNOS:
            return _bug()
        return _fail(_file_error_line(error))
    except Exception:
        return _bug()


def _bug() -> int:
    """Prints the exception being handled with its traceback, then says it is a bug; the exit status is 1."""
    traceback.print_exc()
    print(BUG_LINE, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
