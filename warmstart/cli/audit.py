"""`warmstart audit verify | show | export`: read the audit log in the data directory (no server needed)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from warmstart.cli.base import CLIError, command, data_dir_flags
from warmstart.cli_format import columns
from warmstart.telemetry.audit_verify import Line, Verification, parse_when, read_lines, record_time, select, verify

CSV_COLUMNS = ("time", "seq", "event", "model", "replica", "trigger", "outcome", "seconds", "path", "size",
               "sha256", "engine", "engine_version", "options", "host", "error", "reason", "hash")


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="check and report the audit log of model initializations")
    verbs = audit.add_subparsers(dest="audit_command", metavar="ACTION", parser_class=type(audit))
    verbs.required = True

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--since", help="from this time: 2026-11-22, 2026-11-22T13:00Z, or ago: 24h, 7d")
        p.add_argument("--until", help="before this time (same forms as --since)")
        p.add_argument("--model", help="only this model's records")

    v = verbs.add_parser("verify", help="check the hash chain; name the first bad line")
    data_dir_flags(v)
    v.add_argument("--json", action="store_true", help="print the result as JSON")

    s = verbs.add_parser("show", help="list records as a table")
    data_dir_flags(s)
    filters(s)
    s.add_argument("-n", "--last", type=int, default=50, help="show the last N records (0: all; default 50)")
    s.add_argument("--json", action="store_true", help="print the records as JSON lines")

    e = verbs.add_parser("export", help="write the selected records as JSON or CSV")
    data_dir_flags(e)
    filters(e)
    e.add_argument("--format", choices=["json", "csv"], default="json")
    e.add_argument("-o", "--output", help="file to write (default: standard output)")


def audit_dir(args: argparse.Namespace) -> Path:
    from warmstart.cli.base import load

    config = load(args, {"server.data_dir": args.data_dir})
    directory = config.audit_dir
    if not directory.is_dir():
        raise CLIError(f"no audit log in {directory}: nothing was recorded there yet; "
                       "pass --data-dir (or --config) of the server whose log you want")
    return directory


@command("audit")
def _audit(args: argparse.Namespace) -> int:
    directory = audit_dir(args)
    if args.audit_command == "verify":  # its report names the directory
        return _verify(directory, args)
    code = _show(directory, args) if args.audit_command == "show" else _export(directory, args)
    print(f"audit log read: {directory} (from {_source(args)})", file=sys.stderr)
    return code


def _source(args: argparse.Namespace) -> str:
    from warmstart.config_loader import find_config_file

    if args.data_dir:
        return "--data-dir"
    path = find_config_file(getattr(args, "config", None), os.environ)
    return str(path) if path is not None else "the default data directory; pass --data-dir or --config for another"


def verification_text(result: Verification) -> str:
    files = f"{len(result.files)} file{'s' if len(result.files) != 1 else ''}"
    if result.ok:
        span = f" (seq {result.first_seq}-{result.last_seq})" if result.records else ""
        lines = [f"audit log OK: {result.records} records{span} in {files} under {result.directory}; chain intact"]
    else:
        assert result.problem is not None
        intact = f"the {result.records} records before it are intact" if result.records else "no record before it"
        lines = [f"audit log BROKEN at {result.problem.where()}: {result.problem.message}",
                 f"({result.problem.kind}; {intact}; {files} under {result.directory})"]
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


def _verify(directory: Path, args: argparse.Namespace) -> int:
    result = verify(directory)
    print(json.dumps(result.to_dict(), indent=2) if args.json else verification_text(result))
    return 0 if result.ok else 1


def _selected(directory: Path, args: argparse.Namespace) -> tuple[list[Line], list[dict[str, Any]]]:
    """The log's lines (read once) and the records that pass --since, --until and --model."""
    try:
        since = parse_when(args.since) if args.since else None
        until = parse_when(args.until) if args.until else None
    except ValueError as exc:
        raise CLIError(f"--since/--until: {exc}", status=2) from None
    lines = list(read_lines(directory))
    return lines, select(lines, since=since, until=until, model=args.model)


def _show(directory: Path, args: argparse.Namespace) -> int:
    _, records = _selected(directory, args)
    if args.last > 0:
        records = records[-args.last:]
    if args.json:
        for record in records:
            print(json.dumps(record))
        return 0
    print(records_table(records) if records else "no audit records match")
    return 0


def records_table(records: list[dict[str, Any]]) -> str:
    header = ("TIME (UTC)", "SEQ", "EVENT", "MODEL", "TRIGGER", "OUTCOME", "SECONDS", "SHA256", "DETAIL")
    rows = [header]
    for r in records:
        when = record_time(r)
        seconds = r.get("seconds")
        trigger = r.get("trigger")
        if r.get("event") == "unload" and r.get("reason"):
            # what ended the replica, not what started it (the record's `trigger`, kept with it: the start it ends)
            trigger, detail = r["reason"], f"ends a start by {r.get('trigger') or '-'}"
        elif r.get("event") == "recovery":
            detail = f"acknowledged {len(r.get('torn') or [])} torn line(s)"
        elif r.get("event") == "reload":
            detail = f"{r.get('source')}: {r.get('summary')}"
        else:
            detail = r.get("error") or (f"reason: {r['reason']}" if r.get("reason") else " ".join(
                f"{p.get('phase')} {float(p.get('seconds') or 0):.2f}s" for p in r.get("phases") or []))
        rows.append((
            when.strftime("%Y-%m-%d %H:%M:%S") if when else str(r.get("time")),
            str(r.get("seq")), str(r.get("event")), str(r.get("model") or "-"), str(trigger or "-"),
            str(r.get("outcome") or "-"), f"{seconds:.2f}" if isinstance(seconds, (int, float)) else "-",
            (r.get("sha256") or "-")[:12], detail))
    return "\n".join(columns(rows))


def _export(directory: Path, args: argparse.Namespace) -> int:
    lines, records = _selected(directory, args)
    result = verify(directory, lines)  # of the very lines exported, not a second read
    if not result.ok:
        print(f"warmstart: warning: {verification_text(result).splitlines()[0]}", file=sys.stderr)
    if args.format == "csv":
        text = records_csv(records)
    else:
        text = json.dumps({
            "exported": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "filters": {"since": args.since, "until": args.until, "model": args.model},
            "verification": result.to_dict(),
            "records": records,
        }, indent=2) + "\n"
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as exc:
            raise CLIError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        print(f"wrote {len(records)} records to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def records_csv(records: list[dict[str, Any]]) -> str:
    """One row per record; each phase gets its own column (`phase_load_s`), in the order phases first appear."""
    phases: list[str] = []
    for r in records:
        for p in r.get("phases") or []:
            if p.get("phase") not in phases:
                phases.append(str(p.get("phase")))
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(list(CSV_COLUMNS) + [f"phase_{p}_s" for p in phases])
    for r in records:
        row = [json.dumps(r.get(c), sort_keys=True) if c == "options" else _cell(r.get(c)) for c in CSV_COLUMNS]
        by_phase = {str(p.get("phase")): p.get("seconds") for p in r.get("phases") or []}
        row += [_cell(by_phase.get(p)) for p in phases]
        writer.writerow(row)
    return out.getvalue()


def _cell(value: Any) -> str:
    return "" if value is None else str(value)
