"""A stream's usage event that warmstart asked the engine for, to count the stream's tokens, when the client did
not ask for it (`stream_options.include_usage`): taken out of the stream before the client sees it, as OpenAI's
stream has no usage event unless asked for."""

from __future__ import annotations

import json

_END = b"\n\n"  # the end of a server-sent event, as llama-server and vLLM write them


def usage_only(event: bytes) -> bool:
    """Whether an event is a usage event: no choices, a usage object (what include_usage adds at the end)."""
    if not event.startswith(b"data:"):
        return False
    try:
        body = json.loads(event[5:])
    except ValueError:
        return False
    return isinstance(body, dict) and not body.get("choices") and isinstance(body.get("usage"), dict)


def last_usage(data: bytes) -> bytes:
    """From the last event in `data` that carries `usage` on (a read may bring many events, each with its usage
    when the engine reports it on every chunk)."""
    start = data.rfind(b"data:", 0, data.rfind(b'"usage"'))
    return data[start:] if start > 0 else data


class HiddenUsage:
    """Feeds a stream through, event by event, less its usage event (kept in `usage`). Bytes after the last
    complete event wait for the rest of it: a client reads whole events only, so it waits for nothing more."""

    def __init__(self) -> None:
        self.held = b""
        self.usage = b""

    def feed(self, data: bytes) -> bytes:
        data = self.held + data if self.held else data
        end = data.rfind(_END)
        if end < 0:
            self.held = data
            return b""
        ready, self.held = data[:end + len(_END)], data[end + len(_END):]
        if b'"usage"' not in ready:
            return ready
        kept = []
        for event in ready.split(_END)[:-1]:
            if usage_only(event):
                self.usage = event
            else:
                kept.append(event + _END)
        return b"".join(kept)

    def rest(self) -> bytes:
        """What is held when the stream ends (a last event without its blank line)."""
        held, self.held = self.held, b""
        return held
