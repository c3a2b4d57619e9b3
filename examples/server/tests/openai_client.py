"""Drives llada-server as its users do: with the official `openai` package, and with raw HTTP
for what a well-behaved client never sends.

usage: openai_client.py MAIN_URL SMALL_URL SMALL_KEY EVAL_JSON

MAIN_URL serves the bundled model with the defaults; SMALL_URL the same model with
--max-batch 1 --queue 1 --api-key SMALL_KEY. Exits non-zero, naming the check, on any failure.
"""

import http.client
import json
import sys
import threading
import time
import urllib.parse

import openai

MAIN, SMALL, KEY, EVAL = sys.argv[1:5]
PROMPT = "reverse:pen,frog,rock"
ANSWER = "rock,frog,pen"


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}", flush=True)


def client(url, key="none"):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)


def raw(url, method, path, body=b"", headers=None):
    """One request over a fresh connection: (status, headers, parsed JSON body or text)."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request(method, path, body=body, headers=headers or {"content-type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    try:
        data = json.loads(data)
    except ValueError:
        data = data.decode("utf-8", "replace")
    return r.status, dict(r.getheaders()), data


def health(url):
    return raw(url, "GET", "/health")[2]


def is_error(status, body, expected, what):
    check(status == expected, f"{what}: status {status} (expected {expected})")
    check(
        isinstance(body, dict)
        and isinstance(body.get("error"), dict)
        and body["error"].get("message")
        and body["error"].get("type"),
        f"{what}: OpenAI-style error object ({body})",
    )


c = client(MAIN)

# The model list.
models = c.models.list()
check(len(models.data) == 1 and models.data[0].id == "tiny-llada", "GET /v1/models lists the model")

# One plain call and one streamed call.
r = c.chat.completions.create(model="tiny-llada", messages=[{"role": "user", "content": PROMPT}])
check(r.choices[0].message.content == ANSWER, f"plain chat call answers {ANSWER!r} ({r.choices[0].message.content!r})")
check(r.choices[0].finish_reason == "stop", "plain chat call ends with finish_reason stop")
check(r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0, "usage is counted")

chunks = list(
    c.chat.completions.create(
        model="tiny-llada",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    )
)
text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
check(text == ANSWER, f"streamed chat call answers {ANSWER!r} ({text!r})")
check(finishes == ["stop"], f"the stream finishes once, with stop ({finishes})")
check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0, "the usage chunk comes last")

# The canvas frames are opt-in: asked for, the stream still parses with the openai client
# only if the client is not asked for them, so read them raw.
status, _, body = raw(
    MAIN,
    "POST",
    "/v1/chat/completions",
    json.dumps({"messages": [{"role": "user", "content": PROMPT}], "stream": True, "llada": {"visual": True}}).encode(),
)
check(status == 200 and "event: llada.canvas" in body and "░" in body and body.rstrip().endswith("data: [DONE]"),
      "llada.visual streams canvas frames with masked positions, then [DONE]")

# Completions, whole and streamed, agree; a stop string cuts the answer.
completion = c.completions.create(model="tiny-llada", prompt="copy:ant,bee", max_tokens=16)
streamed = "".join(ch.choices[0].text for ch in c.completions.create(model="tiny-llada", prompt="copy:ant,bee", max_tokens=16, stream=True))
check(streamed == completion.choices[0].text, f"/v1/completions streamed equals whole ({streamed!r})")
r = c.chat.completions.create(model="tiny-llada", messages=[{"role": "user", "content": PROMPT}], stop=[",f"])
check(r.choices[0].message.content == "rock" and r.choices[0].finish_reason == "stop", f"a stop string cuts the answer ({r.choices[0].message.content!r})")
r = c.chat.completions.create(model="tiny-llada", messages=[{"role": "user", "content": PROMPT}], max_tokens=2)
check(r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 2, "max_tokens 2 gives two tokens and finish_reason length")
# Diffusion fields: Fast-dLLM's threshold with the dual cache gives the same answer.
r = c.chat.completions.create(
    model="tiny-llada",
    messages=[{"role": "user", "content": PROMPT}],
    extra_body={"llada": {"threshold": 0.9, "cache": "dual"}},
)
check(r.choices[0].message.content == ANSWER, "llada.threshold + llada.cache dual answer the same")

# 8 concurrent calls give the answers of 8 single calls, and share batches.
items = json.load(open(EVAL))["items"][:8]
prompts = [item["prompt"] for item in items]
single = [
    c.chat.completions.create(model="tiny-llada", messages=[{"role": "user", "content": p}]).choices[0].message.content
    for p in prompts
]
before = health(MAIN)["served"]
together = [None] * len(prompts)
barrier = threading.Barrier(len(prompts))


def ask(i):
    barrier.wait()
    together[i] = (
        client(MAIN).chat.completions.create(model="tiny-llada", messages=[{"role": "user", "content": prompts[i]}]).choices[0].message.content
    )


threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
for t in threads:
    t.start()
for t in threads:
    t.join()
after = health(MAIN)["served"]
check(together == single, f"8 concurrent calls answer as 8 single calls ({together} vs {single})")
check(after["largest_batch"] >= 2 and after["batches"] - before["batches"] < 8,
      f"concurrent calls were batched ({after['batches'] - before['batches']} batches for 8 calls, largest {after['largest_batch']})")
check(sum(1 for s, item in zip(single, items) if s == item["answer"]) >= 7, "the answers are the eval set's")

# The same under Fast-dLLM's threshold rule and dual cache (the batch keeps its cache's rows
# through a block).
fast = {"llada": {"threshold": 0.9, "cache": "dual"}}
single = [
    c.chat.completions.create(model="tiny-llada", messages=[{"role": "user", "content": p}], extra_body=fast).choices[0].message.content
    for p in prompts
]
before = health(MAIN)["served"]
barrier = threading.Barrier(len(prompts))


def ask_fast(i):
    barrier.wait()
    together[i] = (
        client(MAIN).chat.completions.create(model="tiny-llada", messages=[{"role": "user", "content": prompts[i]}], extra_body=fast).choices[0].message.content
    )


threads = [threading.Thread(target=ask_fast, args=(i,)) for i in range(len(prompts))]
for t in threads:
    t.start()
for t in threads:
    t.join()
after = health(MAIN)["served"]
check(together == single, f"with the dual cache too, 8 concurrent calls answer as 8 single calls ({together} vs {single})")
check(after["batches"] - before["batches"] < 8, "and were batched")

# A cancelled stream stops its generation, and the server goes on serving. (A batch also stops
# early when every answer in it is complete before its canvas is: wait for the last one.)
deadline = time.time() + 20
while (h := health(MAIN))["running"] + h["waiting"] and time.time() < deadline:
    time.sleep(0.05)
before = health(MAIN)["served"]["stopped_early"]
u = urllib.parse.urlparse(MAIN)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
long_request = {
    "messages": [{"role": "user", "content": PROMPT}],
    "stream": True,
    "max_tokens": 200,
    "llada": {"steps": 200, "block_length": 200, "visual": True},
}
conn.request("POST", "/v1/chat/completions", body=json.dumps(long_request), headers={"content-type": "application/json"})
resp = conn.getresponse()
seen = b""
while seen.count(b"llada.canvas") < 3:
    seen += resp.read1(4096)
conn.sock.shutdown(2)
conn.close()
deadline = time.time() + 20
while health(MAIN)["served"]["stopped_early"] == before and time.time() < deadline:
    time.sleep(0.05)
h = health(MAIN)
check(h["served"]["stopped_early"] == before + 1, "a client that disconnects cancels its generation")
check(h["running"] == 0, "nothing runs after the cancel")
r = c.chat.completions.create(model="tiny-llada", messages=[{"role": "user", "content": PROMPT}])
check(r.choices[0].message.content == ANSWER, "the server serves after a cancelled stream")

# Hostile and heavy requests: 4xx with an error object, never a crash.
chat_body = lambda **kw: json.dumps({"messages": [{"role": "user", "content": PROMPT}], **kw}).encode()
cases = [
    ("a body over the limit", "POST", "/v1/chat/completions", b'{"messages": "' + b"a" * (2 << 20) + b'"}', 413),
    ("malformed JSON", "POST", "/v1/chat/completions", b'{"messages": [', 400),
    ("a body that is not UTF-8", "POST", "/v1/chat/completions", b'{"messages": "\xff\xfe"}', 400),
    ("JSON nested 10 000 deep", "POST", "/v1/chat/completions", b"[" * 10000 + b"]" * 10000, 400),
    ("an unknown field", "POST", "/v1/chat/completions", chat_body(frobnicate=True), 400),
    ("an unknown diffusion field", "POST", "/v1/chat/completions", chat_body(llada={"stepz": 3}), 400),
    ("absurd max_tokens", "POST", "/v1/chat/completions", chat_body(max_tokens=10**15), 400),
    ("max_tokens over u64", "POST", "/v1/chat/completions", chat_body(max_tokens=10**30), 400),
    ("negative max_tokens", "POST", "/v1/chat/completions", chat_body(max_tokens=-5), 400),
    ("absurd steps", "POST", "/v1/chat/completions", chat_body(llada={"steps": 10**12}), 400),
    ("n = 4", "POST", "/v1/chat/completions", chat_body(n=4), 400),
    ("a wrong type", "POST", "/v1/chat/completions", chat_body(temperature="hot"), 400),
    ("temperature 50", "POST", "/v1/chat/completions", chat_body(temperature=50), 400),
    ("an unknown role", "POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(), 400),
    ("no messages", "POST", "/v1/chat/completions", b"{}", 400),
    ("an empty prompt", "POST", "/v1/completions", json.dumps({"prompt": ""}).encode(), 400),
    ("a prompt longer than the model allows", "POST", "/v1/completions", json.dumps({"prompt": "ant," * 3000}).encode(), 400),
    ("messages on /v1/completions", "POST", "/v1/completions", chat_body(), 400),
    ("an unknown route", "GET", "/v1/engines", b"", 404),
    ("a wrong method", "GET", "/v1/chat/completions", b"", 405),
]
for what, method, path, body, expected in cases:
    status, _, parsed = raw(MAIN, method, path, body)
    is_error(status, parsed, expected, what)
status, _, parsed = raw(MAIN, "POST", "/v1/completions", json.dumps({"prompt": "ant," * 3000}).encode())
check(parsed["error"]["code"] == "context_length_exceeded", "a long prompt is context_length_exceeded")
try:
    c.chat.completions.create(model="tiny-llada", messages=[{"role": "user", "content": PROMPT}], n=2)
    check(False, "n = 2 is refused through the openai client")
except openai.BadRequestError as e:
    check("`n` must be 1" in str(e), "n = 2 is refused through the openai client, with the reason")
r = c.chat.completions.create(model="tiny-llada", messages=[{"role": "user", "content": PROMPT}])
check(r.choices[0].message.content == ANSWER, "the server serves after the hostile requests")
check(health(MAIN)["status"] == "ok", "GET /health")

# The small server: an API key, one request at a time, a queue of one.
status, headers, parsed = raw(SMALL, "GET", "/v1/models")
is_error(status, parsed, 401, "no API key")
try:
    client(SMALL, "wrong").models.list()
    check(False, "a wrong API key is refused")
except openai.AuthenticationError:
    check(True, "a wrong API key is refused")
small = client(SMALL, KEY)
check(small.models.list().data[0].id == "tiny-llada", "the right API key is taken")
statuses = []
retry_after = []


def flood():
    body = json.dumps({"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 200, "llada": {"steps": 200, "block_length": 200}}).encode()
    status, headers, _ = raw(SMALL, "POST", "/v1/chat/completions", body, {"content-type": "application/json", "authorization": "Bearer " + KEY})
    statuses.append(status)
    if status == 503:
        retry_after.append(headers.get("Retry-After") or headers.get("retry-after"))


threads = [threading.Thread(target=flood) for _ in range(6)]
for t in threads:
    t.start()
for t in threads:
    t.join()
check(503 in statuses and 200 in statuses, f"a full queue answers 503 and the rest are served ({sorted(statuses)})")
check(all(r for r in retry_after), "503 carries Retry-After")
print("all client checks passed")
