"""`warmstart reload`: the running server reads its config again (as on SIGHUP) and says what changed."""

from __future__ import annotations

import argparse

from warmstart.cli.base import _client_flags, command, fetch, find_server


def register(sub: argparse._SubParsersAction) -> None:
    reload = sub.add_parser("reload", help="make the running server read its config again (models added, removed, "
                                           "changed) without a restart")
    _client_flags(reload)


@command("reload")
def _reload(args: argparse.Namespace) -> int:
    payload = fetch(args, "POST", "/admin/reload", {}, timeout=120)
    where, _source = find_server(args)
    models = payload.get("models", {})
    print(f"reloaded {where} from {payload.get('source')}")
    for label, key in (("added", "added"), ("removed (drained)", "removed")):
        if models.get(key):
            print(f"  {label}: {', '.join(models[key])}")
    for name, changed in (models.get("restarted") or {}).items():
        print(f"  {name}: {', '.join(changed)} changed; its replicas drain, the next start uses the new settings")
    for name, changed in (models.get("updated") or {}).items():
        print(f"  {name}: {', '.join(changed)} changed, applied now")
    if payload.get("settings_applied"):
        print(f"  applied now: {', '.join(payload['settings_applied'])}")
    if payload.get("needs_restart"):
        print(f"  needs a restart to apply: {', '.join(payload['needs_restart'])}")
    if not any(models.get(k) for k in ("added", "removed", "restarted", "updated")) and not (
            payload.get("settings_applied") or payload.get("needs_restart")):
        print("  nothing changed")
    return 0
