"""Headless Chromium driven over the DevTools protocol (aiohttp's websocket client, already installed
with Ray): load a page, record every request it makes, evaluate an expression, take a screenshot."""
from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.processes import kill_groups

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
         "--window-size=1280,2400", "--remote-debugging-port=0"]


def available() -> bool:
    return Path(CHROMIUM).is_file()


async def _visit(ws_url: str, url: str, expression: str, settle_s: float,
                 wait_for: str | None = None) -> tuple[list[str], object, bytes]:
    import aiohttp

    requests: list[str] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        counter = 0

        async def call(method: str, **params):
            nonlocal counter
            counter += 1
            mine = counter
            await ws.send_str(json.dumps({"id": mine, "method": method, "params": params}))
            while True:
                msg = json.loads((await ws.receive()).data)
                if msg.get("method") == "Network.requestWillBeSent":
                    requests.append(msg["params"]["request"]["url"])
                if msg.get("id") == mine:
                    return msg.get("result", {})

        await call("Network.enable")
        await call("Page.enable")
        await call("Page.navigate", url=url)
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:  # collect requests while the page loads
            state = await call("Runtime.evaluate", expression="document.readyState", returnByValue=True)
            if state["result"].get("value") == "complete":
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        while wait_for and time.monotonic() < deadline:  # a page that renders after loading (an app)
            done = await call("Runtime.evaluate", expression=wait_for, returnByValue=True)
            if done["result"].get("value"):
                break
            await asyncio.sleep(0.3)
        value = (await call("Runtime.evaluate", expression=expression, returnByValue=True))["result"].get("value")
        shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return requests, value, base64.b64decode(shot["data"])


def visit(url: str, expression: str, settle_s: float = 20.0, wait_for: str | None = None,
          window: str = "1280,2400") -> tuple[list[str], object, bytes]:
    """(every URL the page requested, the expression's value, a PNG screenshot of the page).

    ``wait_for``: a JS expression polled (up to ``settle_s``) until true before ``expression`` is read."""
    with tempfile.TemporaryDirectory() as profile:
        flags = [f for f in FLAGS if not f.startswith("--window-size")] + [f"--window-size={window}"]
        proc = subprocess.Popen([CHROMIUM, *flags, f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not port_file.is_file() or not port_file.read_text().strip():
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("chromium did not open its DevTools port")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
                page = next(t for t in json.load(resp) if t["type"] == "page")
            return asyncio.run(_visit(page["webSocketDebuggerUrl"], url, expression, settle_s, wait_for))
        finally:
            kill_groups(proc.pid)
            proc.wait(10)
