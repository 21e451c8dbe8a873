"""`dermdiff study`: run a blinded human real-or-synthetic study in the browser and export its numbers."""

from __future__ import annotations

import ipaddress
import json

NAME = "study"
HELP = "Human real-or-synthetic study: a local web app (select / condition / timed tasks) and its export."
EXAMPLES = """\
  dermdiff study serve --real data/real --synthetic outputs/samples --db study.sqlite --task select
  dermdiff study serve --real data/real --synthetic outputs/samples --db study.sqlite --task timed \\
      --view-seconds 2.5 --access-codes ana:k3y-ana,ben:k3y-ben
  dermdiff study serve ... --access-codes codes.txt        (one rater:code per line)
  dermdiff study export --db study.sqlite --out study_results
"""


def configure(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    serve = actions.add_parser("serve", help="start the study web app (answers saved to --db as they come)")
    serve.add_argument("--real", required=True, help="folder of real images (metadata.csv file_name,label optional)")
    serve.add_argument("--synthetic", required=True, help="folder of synthetic images (same layout)")
    serve.add_argument("--db", required=True, help="SQLite file for plans and answers; reuse it to resume")
    serve.add_argument("--task", default="select", choices=("select", "condition", "timed"),
                       help="select = pick the realistic images (TPR/FPR); condition = which show X (recall); "
                            "timed = real or synthetic after a short view (F1)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    serve.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    serve.add_argument("--access-codes", dest="access_codes",
                       help="rater:code pairs, comma-separated, or a file with one pair per line")
    serve.add_argument("--view-seconds", dest="view_seconds", type=float, default=2.5,
                       help="how long the timed task shows each image (Furger: 2-3 s)")
    serve.add_argument("--seed", type=int, default=0, help="seeds each rater's shuffle")
    serve.add_argument("--grid", type=int, default=12, help="images per page in the grid tasks")
    serve.add_argument("--items-per-rater", dest="items_per_rater", type=int,
                       help="show each rater a random subset of this size (default: every image)")
    serve.add_argument("--condition-names", dest="condition_names",
                       help="label:name pairs (or a file) for the condition prompt, e.g. mel:Melanoma,nv:Melanocytic nevus")
    serve.add_argument("--image-size", dest="image_size", type=int, default=384,
                       help="side of the served images in pixels, the same for real and synthetic (0 = original)")
    serve.add_argument("--fit", default="crop", choices=("crop", "contain"),
                       help="crop = centred square; contain = keep the aspect ratio")
    serve.add_argument("--allowed-hosts", dest="allowed_hosts", default="",
                       help="comma-separated host names raters type in the address bar, besides the loopback "
                            "names and --host (needed with a wildcard --host such as 0.0.0.0)")
    serve.add_argument("--session-hours", dest="session_hours", type=float, default=12.0,
                       help="a login stays valid this many hours (default 12)")

    export = actions.add_parser("export", help="write answers.csv, summary.json and summary.md")
    export.add_argument("--db", required=True, help="the study's SQLite file")
    export.add_argument("--out", required=True, help="output folder")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args) -> int:
    if args.action == "export":
        from ..study.export import export_study

        summary = export_study(args.db, args.out)
        tasks = {task: result["answers"] for task, result in summary["tasks"].items()}
        print(f"wrote answers.csv, summary.json, summary.md to {args.out}: {json.dumps(tasks)}")
        return 0

    from ..errors import UsageError
    from ..study.app import create_app, parse_access_codes, parse_pairs, serve
    from ..study.guards import WILDCARD_HOSTS, allowed_hosts

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be 0..65535, got {args.port}")
    codes = parse_access_codes(args.access_codes)
    if not _is_loopback(args.host) and codes is None:
        raise ValueError(f"--host {args.host} exposes the study beyond this machine: give --access-codes too")
    if not 0 < args.session_hours <= 8760:
        raise UsageError(f"--session-hours must be > 0 and at most 8760 (a year), got {args.session_hours}")
    extra_hosts = [name for name in args.allowed_hosts.split(",") if name.strip()]
    if args.host in WILDCARD_HOSTS and not extra_hosts:
        raise UsageError(f"--host {args.host} listens on every address: name the host(s) raters will use "
                         "with --allowed-hosts (e.g. --allowed-hosts studybox.lan,10.0.0.5)")
    app = create_app(
        args.db, args.real, args.synthetic, task=args.task, access_codes=codes, view_seconds=args.view_seconds,
        seed=args.seed, grid=args.grid, items_per_rater=args.items_per_rater, image_size=args.image_size,
        condition_names=parse_pairs(args.condition_names), fit=args.fit,
        hosts=allowed_hosts(args.host, extra_hosts), session_hours=args.session_hours,
    )
    serve(app, host=args.host, port=args.port)
    return 0
