"""Does a text encoder that learns the instructions, beside MTU in the four-task mixture, lift edits? (issue 11,
sixteenth round)

The sixteenth round found the base's text encoder the first lever on edits in the edit mixture (docs/DIAGNOSIS.md):
the toy base never read the words "make", "add", "remove", "move", "change" and "to" (`edit_diagnosis.NEW_WORDS`),
so its frozen text encoder holds their random initial embeddings, where Stable Diffusion's CLIP had learnt such
words in pre-training. In the edit mixture, training the whole text encoder lifted edits (recolourings included),
training only those six embedding rows (textual inversion, which leaves every caption's encoding bit for bit the
base's) lifted removals alone. This script runs one arm of the check that matters for the shipped model: a train
config (the shipped model's four-task recipe, continued from `--adapter`) with `--train-text all` (the whole text
encoder), `words` (the six rows), `edit` (a copy of the whole encoder that the edit task alone reads and trains;
every other task keeps the base's, so t2i's captions cannot drift) or `none` (the control), the text weights in their own Adam group at `--text-lr`
(constant); then it scores every task on validation examples with the arm's text encoder, appending to `--log` (as
`checkpoint_progress.py` does, so that `--compare CONTROL_LOG ARM_LOG` pairs the arms):

    OMP_NUM_THREADS=1 python benchmarks/text_encoder_mixture.py --adapter src/mtu/toyworld/mtu_model --steps 2000 \\
        --train-text all --out /work/longrun/runs/text-mixture-all \\
        --log benchmarks/results/longrun/text-mixture-all-validation.jsonl
    (the same with --train-text none, another --out and --log: the control)

The arm's adapter is saved under OUT/final-adapter and, when text trains, its text encoder under OUT/text_encoder
(a stock `CLIPTextModel` folder). `--score-only` scores those instead of training (the same --train-text and
--steps); with `--held-out`, on the held-out scenes at the shipped model's guidance (its sampling.json, chosen on
validation when it was packaged): a final comparison of finished arms, never a way to choose anything.

Since the eighteenth round the shipped model has its own edit text encoder (`model.task_text_encoders`) and its
train.yaml lists it: this experiment clears that list (every arm decides its text training itself) and refuses an
`--adapter` that holds task text encoders. The seventeenth round's arms started from the shipped adapter of 36bbb74
(`git archive 36bbb74 src/mtu/toyworld/mtu_model | tar -x -C DIR`), and their held-out logs used its sampling.json
(edit 3 / 1.6, inpaint 3 / 1.5).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # checkpoint_progress and edit_diagnosis, beside this file

SHIPPED = HERE.parent / "src" / "mtu" / "toyworld" / "mtu_model"
CONFIG = SHIPPED / "train.yaml"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG), help="train config (default: the shipped model's recipe)")
    parser.add_argument("--adapter", required=True, help="MTU adapter to continue (model.adapter)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=8e-4)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--text-lr", type=float, default=3e-4, help="the text weights' rate (constant)")
    parser.add_argument("--train-text", required=True, choices=("all", "words", "edit", "none"),
                        help="the whole text encoder, the new words' embeddings, an encoder for edit alone, or "
                             "nothing (the control)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--log", required=True, help="JSON-lines file the scored rows are appended to")
    parser.add_argument("--tasks", default="edit,inpaint,sr,t2i")
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--step-offset", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--text-encoder", default=None, metavar="FOLDER",
                        help="with --train-text edit: start the edit task's encoder from this saved one (an arm's "
                             "OUT/text_encoder, continued with its OUT/final-adapter as --adapter)")
    parser.add_argument("--score-only", action="store_true",
                        help="score OUT's saved arm (final-adapter, text_encoder) instead of training it")
    parser.add_argument("--held-out", action="store_true",
                        help="with --score-only: the held-out scenes at the shipped model's guidance")
    args = parser.parse_args(argv)
    from checkpoint_progress import refuse_below
    from edit_diagnosis import check_adapter_argument

    refuse_below(parser, (("--steps", args.steps, 1), ("--count", args.count, 1),
                          ("--step-offset", args.step_offset, 0), ("--threads", args.threads, 1)))
    if args.text_lr <= 0:
        parser.error(f"--text-lr {args.text_lr}: must be > 0")
    check_adapter_argument(parser, args.adapter)
    if json.loads((Path(args.adapter) / "mtu_config.json").read_text()).get("task_text_encoders"):
        parser.error(f"--adapter {args.adapter!r} holds task text encoders (the shipped model since the eighteenth "
                     f"round); the arms start from an adapter without, e.g. the shipped one of 36bbb74")
    if not Path(args.config).is_file():
        parser.error(f"--config: no such file {args.config!r}")
    if args.text_encoder is not None and (args.train_text != "edit" or not Path(args.text_encoder).is_dir()):
        parser.error(f"--text-encoder {args.text_encoder!r}: a saved text encoder folder, with --train-text edit only")
    if args.held_out and not args.score_only:
        parser.error("--held-out: only with --score-only (a finished arm)")
    saved = [Path(args.out) / "final-adapter"] + ([Path(args.out) / "text_encoder"]
                                                  if args.train_text != "none" else [])
    missing = [str(folder) for folder in saved if not folder.is_dir()]
    if args.score_only and missing:
        parser.error(f"--score-only: --out {args.out!r} holds no saved arm of --train-text {args.train_text} "
                     f"(missing {', '.join(missing)})")

    import torch

    from checkpoint_progress import append_rows, score_pipeline
    from edit_diagnosis import NEW_WORDS, _train_with_text_encoder
    from mtu.toyworld.experiment import pipeline_for
    from mtu.training.config import load_train_config
    from mtu.training.trainer import Trainer

    torch.set_num_threads(args.threads)
    config = load_train_config(args.config, {
        "output_dir": args.out, "resume": "none", "checkpoint_every": 0, "max_steps": args.steps,
        "log_with": "none", "model": {"adapter": args.adapter, "task_text_encoders": []},
        "optim": {"lr": args.lr, "warmup_steps": args.warmup}})
    only = ("edit",) if args.train_text == "edit" else None
    if args.score_only:
        from transformers import CLIPTextModel

        from mtu import load_mtu

        model = load_mtu(saved[0])
        text_encoder = CLIPTextModel.from_pretrained(saved[1]) if len(saved) > 1 else None
    elif args.train_text != "none":
        words = NEW_WORDS if args.train_text == "words" else None
        model, text_encoder = _train_with_text_encoder(config, args.text_lr, words, only, args.text_encoder)
        text_encoder.save_pretrained(saved[1])
    else:
        trainer = Trainer(config)
        trainer.train()
        model, text_encoder = trainer.trained_model(ema=True), None
    if not args.score_only:
        model.save_pretrained(saved[0])
    if text_encoder is not None and only is not None:  # the edit task's own encoder, as the trainer option makes it
        model.set_task_text_encoders({task: text_encoder for task in only})
    pipe = pipeline_for(model, config.model.base)
    if text_encoder is not None and only is None:  # one encoder trained for every task
        pipe.text_encoder = text_encoder
    tasks, name = args.tasks.split(","), f"{args.out} (text_encoder_mixture --train-text {args.train_text})"
    scoring = {"split": "test", "sampling": json.loads((SHIPPED / "sampling.json").read_text())} \
        if args.held_out else {}
    rows = score_pipeline(pipe, tasks, args.count, 0, args.step_offset + args.steps, name, **scoring)
    append_rows(args.log, rows)
    for row in rows:
        print(row["task"], row["main"], f"{row['summary'][row['main']]['value']:.3f}")


if __name__ == "__main__":
    main()
