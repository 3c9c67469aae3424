"""Argument parsing and dispatch for the `streamkeep` command."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from streamkeep._version import __version__
from streamkeep.cli._demo import DEFAULT_CHECKPOINT
from streamkeep.errors import ConfigError, StreamkeepError, UserFunctionError


def _port(text: str) -> int:
    """argparse type of --ui-port: an int in 0..65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        msg = f"{text!r} is not a port: use 0 (any free port) to 65535"
        raise argparse.ArgumentTypeError(msg)
    return port


def _in_app(app: str, exc: BaseException) -> str:
    """For `streamkeep run`: where in APP.py a failure surfaced, and a user function's own traceback.

    The one-line message names operator and batch; without this the user of `run` would not
    see which line of their code raised (`python APP.py` shows the chained traceback).
    """
    out = ""
    cause = exc.__cause__
    if isinstance(exc, UserFunctionError) and cause is not None:
        out = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
    path = os.path.abspath(app)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename) == path]
    if frames:
        out += f"streamkeep: {app}, line {frames[-1].lineno}: {(frames[-1].line or '').strip()}\n"
    return out



def _spark_submit_options(parser: argparse.ArgumentParser) -> None:
    """spark-submit's --master, --name and --conf, for PySpark programs (--pyspark)."""
    parser.add_argument("--master", help="with --pyspark: spark.master, as spark-submit's (only local[N]'s N has an effect)")
    parser.add_argument("--name", dest="spark_app_name", help="with --pyspark: spark.app.name, as spark-submit's")
    parser.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --pyspark: a SparkConf setting, as spark-submit's (e.g. spark.streaming.kafka.maxRatePerPartition=1000); "
        "the program's own conf.set() overrides it",
    )


def _apply_spark_submit_options(args: argparse.Namespace) -> None:
    """Make --master/--name/--conf the defaults of the facade's SparkConf; ConfigError when misused."""
    pairs: dict[str, str] = {}
    for item in args.conf:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            msg = f"--conf {item!r}: expected KEY=VALUE, e.g. --conf spark.streaming.kafka.maxRatePerPartition=1000"
            raise ConfigError(msg)
        pairs[key.strip()] = value
    if args.master is not None:
        pairs["spark.master"] = args.master
    if args.spark_app_name is not None:
        pairs["spark.app.name"] = args.spark_app_name
    if pairs and not args.pyspark:
        msg = "--master, --name and --conf set the SparkConf of a PySpark program: add --pyspark (or drop them)"
        raise ConfigError(msg)
    if args.pyspark:
        from streamkeep.compat.pyspark._conf import set_submit_defaults

        set_submit_defaults(pairs)

def _seconds(text: str) -> float:
    """argparse type of the demo's --seconds and --interval: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        msg = f"{text!r} is not a positive number of seconds"
        raise argparse.ArgumentTypeError(msg)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `streamkeep` command."""
    parser = argparse.ArgumentParser(prog="streamkeep", description="streamkeep: micro-batch streams with exact checkpoints")
    parser.add_argument("--version", action="version", version=f"streamkeep {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="a stateful running word count with a checkpoint (interrupt and rerun: it resumes)")
    demo.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="checkpoint URL (default: %(default)s)")
    demo.add_argument("--seconds", type=_seconds, default=10.0, help="how long to run (default: %(default)s)")
    demo.add_argument("--interval", type=_seconds, default=0.5, help="batch interval in seconds (default: %(default)s)")
    demo.add_argument("--fresh", action="store_true", help="delete the checkpoint first")

    run = sub.add_parser(
        "run",
        help="run a streaming job script",
        description="Run APP.py as __main__ (with a dashboard unless --no-ui). Ctrl-C or SIGTERM (docker stop, "
        "systemd, kill PID) stops the job and releases its checkpoint: after the batch in progress commits (start()), "
        "or abandoning it, to be re-run from its plan at the next start (a run() loop); nothing is lost. "
        "Exit status: 0 the job finished, or was stopped by SIGTERM (a clean stop); 1 the job failed (a source, sink, "
        "user function or checkpoint error, or an exception of APP.py, also in a job started with start() that APP.py "
        "never awaited; the message says which); 2 a usage or "
        "configuration error (bad arguments, no such APP.py, a ConfigError such as an invalid operator argument); "
        "130 stopped by Ctrl-C.",
    )
    run.add_argument("app", help="path of the job's Python file")
    run.add_argument("--pyspark", action="store_true", help="make `import pyspark` resolve to streamkeep's PySpark facade")
    run.add_argument("--ui-port", type=_port, default=4040, help="dashboard port (next free one if taken; default: %(default)s)")
    run.add_argument("--ui-host", default="127.0.0.1", help="address the dashboard binds (default: %(default)s)")
    run.add_argument("--no-ui", action="store_true", help="no dashboard")
    run.add_argument(
        "--executor",
        choices=["local", "processes", "ray"],
        default=None,
        help="executor of the contexts the script creates without one (ray: RAY_ADDRESS, else a local Ray; default: local)",
    )
    _spark_submit_options(run)
    # REMAINDER counts as required, so a bare `streamkeep run` said "required: app, args"; only app is
    script_args = run.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    script_args.required = False

    ck = sub.add_parser("checkpoint", help="inspect, verify, diff or repair a checkpoint")
    cks = ck.add_subparsers(dest="action", required=True)
    url_help = "the checkpoint: the directory or fsspec URL the job was given (e.g. ckpt/ or s3://bucket/jobs/x)"
    ins = cks.add_parser("inspect", help="summary of a checkpoint")
    ins.add_argument("url", help=url_help)
    ins.add_argument("--json", action="store_true", help="machine-readable output")
    ver = cks.add_parser("verify", help="check every file's checksum and the commit chain")
    ver.add_argument("url", help=url_help)
    dif = cks.add_parser("diff", help="what the graph APP.py builds would restore, start fresh, drop or fail on")
    dif.add_argument("url", help=url_help)
    dif.add_argument("app", help="path of the job's Python file (its graph is built, the job is not run)")
    dif.add_argument("--pyspark", action="store_true", help="APP.py is a PySpark program (as `streamkeep run --pyspark`)")
    _spark_submit_options(dif)
    dif.add_argument("args", nargs="*", help="arguments for the script (after --: diff URL APP.py -- --flag value)")
    rep = cks.add_parser(
        "repair",
        help="rewrite a damaged CHECKPOINT (identity) file, keeping what it still holds; commits and state are not touched",
    )
    rep.add_argument("url", help=url_help)
    rep.add_argument("--id", dest="checkpoint_id", metavar="ID", help="the checkpoint id to write (when the damaged file's id is unreadable)")
    for p in (ins, ver, dif, rep):
        p.add_argument(
            "--storage-option",
            "-o",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="fsspec option for the URL, e.g. endpoint_url=http://127.0.0.1:9000 (repeatable)",
        )

    args, unknown = parser.parse_known_args(argv)
    if unknown:  # name the subcommand's usage and options, not the top level's
        at = {"demo": demo, "run": run}.get(args.command) or {"inspect": ins, "verify": ver, "diff": dif, "repair": rep}[args.action]
        hint = "; the script's own arguments go after --" if at is dif else ""
        at.error(f"unrecognized arguments: {' '.join(unknown)} (see {at.prog} --help{hint})")
    try:
        if args.command == "demo":
            from streamkeep.cli._demo import run_demo

            return run_demo(args.checkpoint, args.seconds, args.interval, args.fresh)
        if args.command == "run" or getattr(args, "action", None) == "diff":
            _apply_spark_submit_options(args)
        if args.command == "run":
            from streamkeep.cli._run import run_app

            return run_app(
                args.app,
                args.args,
                pyspark=args.pyspark,
                ui_port=None if args.no_ui else args.ui_port,
                ui_host=args.ui_host,
                executor=args.executor,
            )
        from streamkeep.cli._common import storage_options

        opts = storage_options(args.storage_option)
        if args.action == "inspect":
            from streamkeep.cli._inspect import inspect

            return inspect(args.url, as_json=args.json, storage_options=opts)
        if args.action == "verify":
            from streamkeep.cli._verify import verify

            return verify(args.url, storage_options=opts)
        if args.action == "repair":
            from streamkeep.cli._repair import repair

            return repair(args.url, checkpoint_id=args.checkpoint_id, storage_options=opts)
        from streamkeep.cli._diff import diff

        return diff(args.url, args.app, args.args, storage_options=opts, pyspark=args.pyspark)
    except StreamkeepError as exc:
        where = _in_app(args.app, exc) if args.command == "run" else ""
        print(f"{where}streamkeep: {type(exc).__name__}: {exc}", file=sys.stderr)
        # `run`: a ConfigError is a usage or configuration error (2, as argparse's); any other one the job failing (1)
        return 1 if args.command == "run" and not isinstance(exc, ConfigError) else 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `streamkeep checkpoint inspect URL | head`
        sys.stderr.close()
        return 0
    finally:
        if "streamkeep.compat.pyspark._conf" in sys.modules:  # main() called in-process: later SparkConfs start clean
            sys.modules["streamkeep.compat.pyspark._conf"].set_submit_defaults({})
