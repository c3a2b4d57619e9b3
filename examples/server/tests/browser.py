"""The page in headless Chromium, driven over the DevTools protocol: type a prompt, press
Enter, wait for the answer, keep a screenshot.

usage: browser.py URL CHROMIUM SCREENSHOT_PNG
"""

import base64
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket  # websocket-client

URL, CHROMIUM, SHOT = sys.argv[1:4]
PROMPT = "reverse:pen,frog,rock"
ANSWER = "rock,frog,pen"


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}", flush=True)


profile = tempfile.mkdtemp(prefix="llada-chromium-")
browser = subprocess.Popen(
    [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",  # the tests may run as root
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "--window-size=900,700",
        "about:blank",
    ],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
try:
    # Chromium writes the port it took into the profile.
    port_file = os.path.join(profile, "DevToolsActivePort")
    deadline = time.time() + 60
    while not os.path.exists(port_file) or not open(port_file).read().strip():
        check(browser.poll() is None, "chromium starts")
        if time.time() > deadline:
            raise SystemExit("FAILED: chromium did not open its DevTools port in 60 s")
        time.sleep(0.1)
    port = int(open(port_file).read().split()[0])
    targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
    page = next(t for t in targets if t["type"] == "page")
    ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
    ids = itertools.count(1)

    def call(method, **params):
        n = next(ids)
        ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = json.loads(ws.recv())
            if msg.get("id") == n:
                if "error" in msg:
                    raise SystemExit(f"FAILED: {method}: {msg['error']}")
                return msg["result"]

    def js(expr):
        result = call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise SystemExit(f"FAILED: {expr}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(expr, what, seconds=60):
        deadline = time.time() + seconds
        while time.time() < deadline:
            if js(expr):
                return
            time.sleep(0.1)
        raise SystemExit(f"FAILED: {what} (within {seconds} s)")

    call("Page.enable")
    call("Page.navigate", url=URL)
    wait_for("document.readyState === 'complete' && document.getElementById('model').textContent.includes('tiny-llada')",
             "the page loads and names the model")
    check(True, "the page loads and names the model")
    # Type as a user does: focus the box, insert the text, press Enter.
    js("document.getElementById('prompt').focus()")
    call("Input.insertText", text=PROMPT)
    for kind in ("keyDown", "keyUp"):
        call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)
    wait_for("document.querySelector('.assistant') && document.querySelector('.assistant').dataset.done === '1'",
             "the answer completes")
    answer = js("document.querySelector('.assistant span').textContent")
    check(answer == ANSWER, f"the page shows the answer {ANSWER!r} ({answer!r})")
    frames = int(js("document.querySelector('.assistant').dataset.frames"))
    check(frames >= 2, f"the canvas unmasked step by step on the page ({frames} frames)")
    shot = call("Page.captureScreenshot", format="png")
    os.makedirs(os.path.dirname(os.path.abspath(SHOT)), exist_ok=True)
    with open(SHOT, "wb") as f:
        f.write(base64.b64decode(shot["data"]))
    check(os.path.getsize(SHOT) > 1000, f"screenshot kept at {SHOT}")
    ws.close()
finally:
    browser.terminate()
    try:
        browser.wait(10)
    except subprocess.TimeoutExpired:
        browser.kill()
print("browser checks passed")
