"""Waiting for an engine process to answer its health check, or to die trying."""

from __future__ import annotations

import asyncio
import time

from warmstart.engines.base import EngineProcess
from warmstart.errors import EngineError


async def wait_healthy(proc: EngineProcess, url: str, timeout: float, interval: float = 0.02) -> None:
    import aiohttp  # imported when first used: engines start before the gateway (which needs it) is imported

    deadline = time.monotonic() + timeout
    last = "no answer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise EngineError(f"engine process exited with code {proc.returncode} before it was healthy")
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                last = type(exc).__name__
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, 0.5)
    raise EngineError(f"engine did not answer {url} within {timeout:g} s (last: {last})")
