"""The `ctflow` command: run the embedded stack, drop data, publish messages, read runs.

Commands that act (drop, publish) go through the same ports the services use, so they
work in either mode; commands that read go through the status API.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from .settings import ClientSettings


def _settings(args: argparse.Namespace) -> ClientSettings:
    """Settings from the environment and the options, as a client of the deployment: in gcp
    mode `drop` and `publish` need the project (and bucket), nothing the services need."""
    from pydantic import ValidationError

    from .settings import ClientSettings

    overrides: dict[str, Any] = {}
    if getattr(args, "home", None):
        overrides["home"] = Path(args.home).resolve()
    if getattr(args, "bucket", None):
        overrides["bucket"] = args.bucket
    try:
        return ClientSettings(**overrides)
    except ValidationError as exc:
        sys.exit(f"ctflow: {'; '.join(_setting_error(error) for error in exc.errors())}")


def _setting_error(error: Any) -> str:
    """One settings error, naming the environment variable it came from when it has one."""
    said = error["msg"].removeprefix("Value error, ")
    return f"CTFLOW_{str(error['loc'][0]).upper()}: {said}" if error["loc"] else said


def _status_api(args: argparse.Namespace) -> str:
    if args.api:
        return args.api.rstrip("/")
    settings = _settings(args)
    endpoints = settings.home / "endpoints.json"
    if not endpoints.exists():
        sys.exit(f"ctflow: no running stack at {settings.home} (start one with `ctflow up`, or pass --api URL)")
    return json.loads(endpoints.read_text())["status_api"].rstrip("/")


def _call(method: str, url: str, *, json_body: Any = None, **params: str | None) -> Any:
    """The status API's JSON answer; on a refusal, exit with what the API said about it."""
    import httpx

    try:
        response = httpx.request(method, url, params={k: v for k, v in params.items() if v}, json=json_body, timeout=90)
    except httpx.HTTPError as exc:
        sys.exit(f"ctflow: the status API at {url} did not answer: {exc}")
    if response.is_error:
        try:
            said = response.json()
        except ValueError:
            said = None
        detail = said.get("detail") if isinstance(said, dict) else None
        sys.exit(f"ctflow: {detail or response.text or response.reason_phrase} (HTTP {response.status_code})")
    return response.json()


def _embedded_settings(args: argparse.Namespace) -> ClientSettings:
    from . import bootstrap

    settings = _settings(args)
    try:
        bootstrap.require_embedded(settings, args.command)
    except bootstrap.NotEmbedded as exc:
        sys.exit(str(exc))
    return settings


def cmd_up(args: argparse.Namespace) -> int:
    from .embedded.stack import EmbeddedStack, HomeInUse

    settings = _embedded_settings(args)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stack = EmbeddedStack(settings, port_base=args.port_base)
    except HomeInUse as exc:
        sys.exit(f"ctflow up: {exc}")
    with stack:
        print(json.dumps(stack.endpoints(), indent=2), flush=True)
        print(f"ctflow up: running; service logs in {stack.log_file}; stop with Ctrl-C", file=sys.stderr, flush=True)
        stop.wait()
        training = stack.runs_still_training()
    if training:
        print(
            f"ctflow up: stopped. Still training: {', '.join(training)}. Their trainer processes go on, as "
            "Vertex AI jobs would; the next `ctflow up` on this home records how they ended.",
            file=sys.stderr,
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .embedded.stack import HomeInUse

    try:
        return run_demo(_embedded_settings(args), timeout=args.timeout)
    except HomeInUse as exc:
        sys.exit(f"ctflow demo: {exc}")


def cmd_drop(args: argparse.Namespace) -> int:
    from . import bootstrap
    from .dataset_drop import drop_folder
    from .pipelines import PipelineCatalog, PipelineError

    settings = _settings(args)
    pipelines = PipelineCatalog(settings.pipelines_dir)
    try:
        spec = pipelines.get(args.pipeline)
    except PipelineError as exc:  # a spec in the folder does not load: say which and why
        sys.exit(f"ctflow: the pipeline specs in {settings.pipelines_dir} do not load: {exc}")
    if spec is None:
        sys.exit(f"ctflow: unknown pipeline {args.pipeline!r} (known: {', '.join(pipelines.all())})")
    try:
        print(json.dumps(drop_folder(Path(args.path), spec, bootstrap.blob_store(settings), args.version), indent=2))
    except ValueError as exc:
        sys.exit(f"ctflow: {exc}")
    return 0


def _json_option(option: str, value: str) -> Any:
    """A JSON object given on the command line; exits with the reason if it is not one."""
    from .codec import MalformedRequest, parse_json

    try:
        parsed = parse_json(value.encode(), option)
    except MalformedRequest as exc:
        sys.exit(f"ctflow: {exc}")
    if not isinstance(parsed, dict):
        sys.exit(f"ctflow: {option} must be a JSON object, e.g. '{{\"lr\": 0.01}}'")
    return parsed


def cmd_publish(args: argparse.Namespace) -> int:
    from . import bootstrap
    from .topology import HPARAMS_TOPIC

    message: dict[str, Any] = {"pipeline": args.pipeline, "hyperparameters": _json_option("--hparams", args.hparams)}
    if args.sweep:
        message["sweep"] = _json_option("--sweep", args.sweep)
    if args.dataset_version:
        message["dataset_version"] = args.dataset_version
    if args.reason:
        message["reason"] = args.reason
    settings = _settings(args)
    bus = bootstrap.client_bus(settings)
    message_id = bus.publish(HPARAMS_TOPIC, json.dumps(message).encode(), {"ctflow-trigger": "cli"})
    print(json.dumps({"message_id": message_id, "topic": HPARAMS_TOPIC, "message": message}, indent=2))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    rows = _call("GET", f"{_status_api(args)}/runs", pipeline=args.pipeline, state=args.state)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    _table(
        ("RUN", "PIPELINE", "STATE", "TRIGGER", "DATASET", "MODEL", "CREATED"),
        [
            (
                r["run_id"],
                r["pipeline"],
                r["state"],
                r["trigger"].get("kind", ""),
                r["dataset_version"],
                r["model_version"],
                r["created_at"],
            )
            for r in rows
        ],
    )
    return 0


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """Columns as wide as their widest cell; a missing value shows as '-'."""
    cells = [header, *[tuple("-" if value in (None, "") else str(value) for value in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def cmd_run(args: argparse.Namespace) -> int:
    print(json.dumps(_call("GET", f"{_status_api(args)}/runs/{quote(args.run_id, safe='')}"), indent=2))
    return 0


def cmd_rollouts(args: argparse.Namespace) -> int:
    rows = _call(
        "GET", f"{_status_api(args)}/rollouts", pipeline=args.pipeline, environment=args.environment, state=args.state
    )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    _table(
        ("ROLLOUT", "ENVIRONMENT", "VERSION", "STABLE", "PHASE", "WEIGHT", "REASON"),
        [
            (
                r["rollout_id"],
                r["environment"],
                r["candidate_version"],
                r["stable_version"],
                r["phase"],
                f"{r['weight']}%",
                r["reason"],
            )
            for r in rows
        ],
    )
    return 0


ROLLOUT_ACTIONS = ("promote", "abort", "pause", "resume")


def cmd_rollout(args: argparse.Namespace) -> int:
    """`ctflow rollout ID` shows it; `ctflow rollout promote|abort|pause|resume ID` asks the deployer."""
    words = args.words
    if len(words) == 1:
        print(json.dumps(_call("GET", f"{_status_api(args)}/rollouts/{quote(words[0], safe='')}"), indent=2))
        return 0
    if len(words) != 2 or words[0] not in ROLLOUT_ACTIONS:
        sys.exit(f"ctflow rollout: expected ID, or one of {', '.join(ROLLOUT_ACTIONS)} then ID; got {' '.join(words)}")
    action, rollout_id = words
    answer = _call(
        "POST",
        f"{_status_api(args)}/rollouts/{quote(rollout_id, safe='')}/{action}",
        json_body={"by": args.by or _who(), **({"reason": args.reason} if args.reason else {})},
    )
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(
            f"ctflow rollout: {action} of {rollout_id} asked; the deployer takes it on its next tick "
            f"(now {answer['phase']} at {answer['weight']}%). Follow it with: ctflow rollout {rollout_id}"
        )
    return 0


def _who() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "ctflow-cli"


def cmd_model(args: argparse.Namespace) -> int:
    view = _call("GET", f"{_status_api(args)}/models/{quote(args.pipeline, safe='')}")
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    _table(
        ("VERSION", "ALIASES", "RUN"),
        [(v["version"], ",".join(v["aliases"]), v["run_id"]) for v in view["versions"]],
    )
    for environment, where in view["environments"].items():
        traffic = ", ".join(f"{rev} {pct}%" for rev, pct in (where["traffic"] or {}).items()) or "unknown here"
        print(f"\n{environment}: version {where['serving_version'] or '(none)'} serves; traffic: {traffic}")
        for rollout in where["rollouts_under_way"]:
            print(f"  rollout {rollout['rollout_id']}: {rollout['phase']} at {rollout['weight']}%")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """POST a request body ({"instances": [...]}) to the pipeline's serving URL; print the answer."""
    import httpx

    url = args.url
    if not url:
        endpoints = _settings(args).home / "endpoints.json"
        if not endpoints.exists():
            sys.exit("ctflow predict: no running stack here (start one with `ctflow up`, or pass --url)")
        url = json.loads(endpoints.read_text()).get("serving", {}).get(args.pipeline)
        if not url:
            sys.exit(f"ctflow predict: the stack serves no pipeline {args.pipeline!r}")
    try:
        body = sys.stdin.buffer.read() if args.json == "-" else Path(args.json).read_bytes()
    except OSError as exc:
        sys.exit(f"ctflow predict: cannot read {args.json}: {exc}")
    target = f"{url.rstrip('/')}/v1/models/{args.pipeline}:predict"
    try:
        answer = httpx.post(target, content=body, headers={"content-type": "application/json"}, timeout=60)
    except httpx.HTTPError as exc:
        sys.exit(f"ctflow predict: {target} did not answer: {exc}")
    print(answer.text)
    if answer.is_error:
        revision = answer.headers.get("ctflow-revision", "?")
        print(f"ctflow predict: HTTP {answer.status_code} from revision {revision}", file=sys.stderr)
        return 1
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    letters = _call("GET", f"{_status_api(args)}/dead-letters", status=args.status, consumer=args.consumer)
    print(json.dumps(letters, indent=2))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Send a dead letter back to its service; exit 1 unless it now went through."""
    answer = _call("POST", f"{_status_api(args)}/dead-letters/{quote(args.letter_id, safe='')}/replay")
    print(json.dumps(answer, indent=2))
    return 0 if answer["result"].get("status") in ("processed", "duplicate", "ignored") else 1


def cmd_sample_data(args: argparse.Namespace) -> int:
    from .sample_data import write_digits_dataset

    if args.name != "digits":
        sys.exit(f"ctflow: no sample data named {args.name!r} (available: digits)")
    print(write_digits_dataset(Path(args.dir)))
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from .ledger import Ledger

    ledger = Ledger(_settings(args).ledger_url)
    ledger.migrate()
    print(f"ledger schema at {ledger.schema_revision()}")
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    from .schema_files import check_schema_files, write_schema_files

    if args.write:
        for path in write_schema_files(_settings(args).schemas_dir):
            print(path)
        return 0
    stale = check_schema_files(_settings(args).schemas_dir)
    for path in stale:
        print(f"out of date: {path}", file=sys.stderr)
    return 1 if stale else 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ctflow", description="Continuous training for PyTorch models.")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument(
            "--home", default=os.environ.get("CTFLOW_HOME"), help="embedded state folder (default ~/.ctflow)"
        )
        c.set_defaults(fn=fn)
        return c

    c = command("up", cmd_up, "Start the embedded stack and write <home>/endpoints.json.")
    c.add_argument(
        "--port-base",
        type=int,
        help="first of seven consecutive loopback ports: six services, then the bus (default: any free)",
    )
    c = command("demo", cmd_demo, "Run the whole loop on the bundled digits dataset.")
    c.add_argument("--timeout", type=float, default=300)
    c = command("drop", cmd_drop, "Upload a folder as a dataset version, commit marker last.")
    c.add_argument("path")
    c.add_argument("--pipeline", required=True)
    c.add_argument("--version")
    c.add_argument("--bucket", help="target bucket: a local folder (embedded) or a bucket name (gcp)")
    c = command("publish", cmd_publish, "Publish a hyperparameter message.")
    c.add_argument("--pipeline", required=True)
    c.add_argument("--hparams", default="{}", help="JSON object, e.g. '{\"lr\": 0.01}'")
    c.add_argument("--sweep", help="JSON object of lists, e.g. '{\"lr\": [0.01, 0.001]}'")
    c.add_argument("--dataset-version")
    c.add_argument("--reason")
    for name, fn, help in (
        ("runs", cmd_runs, "List runs."),
        ("run", cmd_run, "Show one run with its timeline."),
        ("rollouts", cmd_rollouts, "List rollouts of model versions into environments."),
        (
            "rollout",
            cmd_rollout,
            "Show one rollout with its plan and every decision with its figures (`rollout ID`), or ask the "
            "deployer to promote, abort, pause or resume it (`rollout promote ID`).",
        ),
        ("model", cmd_model, "Show a pipeline's model: versions, aliases, what serves where with which traffic."),
        ("dead-letters", cmd_dead_letters, "List dead letters, newest first, with their reasons."),
        ("replay", cmd_replay, "Send a dead letter back to its service once the cause is fixed."),
    ):
        c = command(name, fn, help)
        c.add_argument("--api", help="status API URL (default: from <home>/endpoints.json)")
        if name == "runs":
            c.add_argument("--pipeline")
            c.add_argument("--state")
            c.add_argument("--json", action="store_true")
        if name == "run":
            c.add_argument("run_id")
        if name == "rollouts":
            c.add_argument("--pipeline")
            c.add_argument("--environment")
            c.add_argument(
                "--state", help="phase: readying, analysing, paused, promoted, rolled_back, superseded, conflict"
            )
            c.add_argument("--json", action="store_true")
        if name == "rollout":
            c.add_argument("words", nargs="+", metavar="[ACTION] ID", help="promote|abort|pause|resume, then the id")
            c.add_argument("--by", help="who asks (recorded with the decision; default: your user name)")
            c.add_argument("--reason", help="why (recorded with the decision)")
            c.add_argument("--json", action="store_true")
        if name == "model":
            c.add_argument("pipeline")
            c.add_argument("--json", action="store_true")
        if name == "dead-letters":
            c.add_argument("--status", choices=("open", "replayed"))
            c.add_argument("--consumer", help="the service that refused them, e.g. dataset-listener")
        if name == "replay":
            c.add_argument("letter_id")
    c = command("predict", cmd_predict, "Send a prediction request to a pipeline's model and print the answer.")
    c.add_argument("--pipeline", required=True)
    c.add_argument("--json", required=True, metavar="FILE", help='request body {"instances": [...]}; - for stdin')
    c.add_argument("--url", help="the serving URL (default: the stack's, from <home>/endpoints.json)")
    c = command("sample-data", cmd_sample_data, "Write a bundled sample dataset version, ready for `ctflow drop`.")
    c.add_argument("name")
    c.add_argument("dir")
    command("db-upgrade", cmd_db_upgrade, "Migrate the ledger database to the current schema.")
    c = command("schemas", cmd_schemas, "Check (default) or --write schemas/ from the contracts.")
    c.add_argument("--write", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
