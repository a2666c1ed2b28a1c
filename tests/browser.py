"""A page opened in a real headless Chromium (Debian's `chromium` package), driven over the
DevTools protocol with aiohttp's websocket client: what the page logged, what it requested,
what a script reads off it, and a screenshot.

Used to check that `etong report --format html` renders, offline, with no console error and
no network request (DESIGN §10).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.waiting import wait_until

CHROMIUM_NAMES = ("chromium", "chromium-browser")
INSTALL_HINT = "apt-get install -y chromium (Debian's package)"


def chromium_binary() -> str:
    """The Chromium on PATH; an AssertionError naming the package when there is none."""
    for name in CHROMIUM_NAMES:
        if found := shutil.which(name):
            return found
    raise AssertionError(f"the page tests need Chromium: {INSTALL_HINT}")


@dataclass
class PageVisit:
    """What happened while a page loaded."""

    requests: list[str] = field(default_factory=list)
    """Every URL the page asked for, the page's own first."""
    console_errors: list[str] = field(default_factory=list)
    """Console errors, uncaught exceptions and browser log errors (a refused request too)."""


class Page:
    """One tab of a headless Chromium, over the DevTools protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self.visit = PageVisit()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command; collect the events that arrive before its answer."""
        call_id = next(self._ids)
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        while True:
            message = await self._ws.receive_json(timeout=30)
            if message.get("id") == call_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._note(message)

    async def open(self, url: str) -> None:
        """Navigate and wait for the load event."""
        for domain in ("Page", "Runtime", "Network", "Log"):
            await self.call(f"{domain}.enable")
        await self.call("Page.navigate", url=url)
        loaded = False
        while not loaded:
            message = await self._ws.receive_json(timeout=30)
            loaded = message.get("method") == "Page.loadEventFired"
            self._note(message)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a script run in the page."""
        answer = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return answer["result"].get("value")

    async def screenshot(self, path: Path, width: int = 1100, height: int = 1500) -> Path:
        """A PNG of the page's top, `width` CSS pixels wide."""
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = await self.call("Page.captureScreenshot", format="png")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))
        return path

    async def pdf(self, path: Path) -> Path:
        """The page printed (A4 comes from its own @page rule)."""
        printed = await self.call("Page.printToPDF", preferCSSPageSize=True)
        await asyncio.to_thread(path.write_bytes, base64.b64decode(printed["data"]))
        return path

    def _note(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Network.requestWillBeSent":
            self.visit.requests.append(params["request"]["url"])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.visit.console_errors.append(str(params.get("args")))
        elif method == "Runtime.exceptionThrown":
            self.visit.console_errors.append(str(params.get("exceptionDetails")))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.visit.console_errors.append(str(params["entry"].get("text")))


@contextlib.asynccontextmanager
async def headless_page(profile: Path) -> AsyncIterator[Page]:
    """A headless Chromium with a fresh profile in `profile` and one tab; stopped after."""
    await asyncio.to_thread(profile.mkdir, parents=True, exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        *[
            chromium_binary(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"

        def port_written() -> bool:
            # Chromium creates the file before it writes the port into it.
            return port_file.exists() and bool(port_file.read_text().split())

        await wait_until(port_written, "Chromium's DevTools port")
        port = port_file.read_text().split()[0]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            [tab] = [t for t in targets if t["type"] == "page"]
            async with session.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield Page(ws)
    finally:
        process.terminate()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
