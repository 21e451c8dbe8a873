"""`dermdiff demo`: the whole story on the built-in phantom in one command (see `dermdiff.demo`)."""

from __future__ import annotations

NAME = "demo"
HELP = ("Run the main job on the built-in phantom: data, diffusion training, sweeps, lesion transfer, "
        "hard-case loop, evaluation, report.html.")
EXAMPLES = """\
  dermdiff demo                                   # ~15 minutes on 2 CPU cores, writes outputs/demo/report.html
  dermdiff demo --quick --out outputs/demo-quick  # ~2 minutes: tiny phantom, tiny model, few steps
  dermdiff demo --resume                          # continue an interrupted demo (finished steps are skipped)
  dermdiff demo --overwrite --seed 1              # start again from scratch with another seed
  dermdiff demo --stop-after diffusion            # stop after that step; later: dermdiff demo --resume
"""


def configure(parser) -> None:
    from ..demo import STEP_NAMES

    parser.add_argument("--out", default="outputs/demo", help="run folder (default outputs/demo)")
    parser.add_argument("--seed", type=int, default=0, help="the one seed of data, training, sampling (default 0)")
    parser.add_argument("--quick", action="store_true", help="tiny phantom, tiny model, few steps (~2 minutes)")
    parser.add_argument("--train-steps", dest="train_steps", type=int,
                        help="diffusion training steps (default 1500, or 12 with --quick)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the demo in --out: skip finished steps, resume training from its checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="delete the demo already in --out and start again")
    parser.add_argument("--classifier-backbone", dest="classifier_backbone",
                        help="classifier of the hard-case round: a torchvision model name (default resnet18) or a "
                        "transformers Hub id / local folder")
    parser.add_argument("--classifier-pretrained", dest="classifier_pretrained",
                        help="its initial weights: a local file, 'imagenet' (torch hub cache) or a transformers "
                        "folder")
    parser.add_argument("--stop-after", dest="stop_after", choices=STEP_NAMES, metavar="STEP",
                        help=f"stop after this step ({', '.join(STEP_NAMES)})")


def run(args) -> int:
    from ..demo import demo_config, run_demo
    from ..demo_report import format_summary

    overrides = {"seed": args.seed}
    if args.train_steps is not None:
        if args.train_steps < 1:
            raise ValueError(f"--train-steps must be >= 1, got {args.train_steps}")
        overrides["train_steps"] = args.train_steps
    if args.classifier_backbone is not None:
        from ..classifier import check_backbone

        overrides["classifier_backbone"] = check_backbone(args.classifier_backbone)
    if args.classifier_pretrained is not None:
        overrides["classifier_pretrained"] = args.classifier_pretrained
    config = demo_config(quick=args.quick, **overrides)
    done = run_demo(config, args.out, resume=args.resume, overwrite=args.overwrite, stop_after=args.stop_after)
    if "report" in done:
        print()
        print(format_summary(done["report"]["outputs"]["summary"]))
        print(f"\nreport: {done['report']['outputs']['report']}")
    return 0
