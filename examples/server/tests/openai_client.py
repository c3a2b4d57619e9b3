"""Drives llada-server as its users do: with the official `openai` package, and with raw HTTP
for what a well-behaved client never sends.

usage: openai_client.py MAIN_URL SLOW_URL SMALL_URL SMALL_KEY EVAL_JSON

MAIN_URL serves the bundled model with the defaults; SLOW_URL the same with
--step-delay-ms 30 (a generation lasts long enough for requests to meet in the queue and for
a client to leave mid-answer); SMALL_URL with --max-batch 1 --queue 1 --api-key SMALL_KEY
--step-delay-ms 30. Exits non-zero, naming the check, on any failure.
"""

import http.client
import json
import sys
import threading
import time
import urllib.parse

import openai

MAIN, SLOW, SMALL, KEY, EVAL = sys.argv[1:6]
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

# 8 concurrent calls give the answers of 8 single calls, and share batches: on the slow
# server the first call's generation lasts long enough for the other 7 to queue behind it.
items = json.load(open(EVAL))["items"][:8]
prompts = [item["prompt"] for item in items]


def settle(url):
    deadline = time.time() + 20
    while (h := health(url))["running"] + h["waiting"] and time.time() < deadline:
        time.sleep(0.02)
    return h


def concurrent(url, extra):
    clients = [client(url) for _ in prompts]  # built before the start line
    answers = [None] * len(prompts)
    barrier = threading.Barrier(len(prompts))

    def ask(i):
        barrier.wait()
        answers[i] = (
            clients[i].chat.completions.create(model="tiny-llada", messages=[{"role": "user", "content": prompts[i]}], extra_body=extra).choices[0].message.content
        )

    before = health(url)["served"]
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = settle(url)["served"]
    return answers, after["batches"] - before["batches"], after["largest_batch"]


for name, extra in [("the reference schedule", {}), ("threshold 0.9 and the dual cache", {"llada": {"threshold": 0.9, "cache": "dual"}})]:
    single = [
        c.chat.completions.create(model="tiny-llada", messages=[{"role": "user", "content": p}], extra_body=extra).choices[0].message.content
        for p in prompts
    ]
    together, batches, largest = concurrent(SLOW, extra)
    check(together == single, f"{name}: 8 concurrent calls answer as 8 single calls ({together} vs {single})")
    # The first batch starts with the calls that have arrived (one, or a few that came together)
    # and every later call joins the second: at most 2 batches, so one of at least 4 rows. One
    # call at a time would take 8.
    check(batches <= 2 and largest >= 4, f"{name}: the 8 calls shared batches ({batches} batches, the largest {largest} rows)")
    check(sum(1 for s, item in zip(single, items) if s == item["answer"]) >= 7, f"{name}: the answers are the eval set's")

# Guidance sends every row twice: batched, it still answers.
together, _, _ = concurrent(SLOW, {"llada": {"cfg_scale": 0.5}})
check(all(isinstance(t, str) for t in together), "classifier-free guidance, batched, answers")

# A client that leaves mid-answer stops its generation, and the server goes on serving.
before = settle(SLOW)["served"]["stopped_early"]
u = urllib.parse.urlparse(SLOW)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
conn.request(
    "POST",
    "/v1/chat/completions",
    body=json.dumps({"messages": [{"role": "user", "content": PROMPT}], "stream": True, "llada": {"visual": True}}),
    headers={"content-type": "application/json"},
)
resp = conn.getresponse()
seen = b""
while seen.count(b"llada.canvas") < 2:
    chunk = resp.read1(4096)
    if not chunk:
        break
    seen += chunk
check(seen.count(b"llada.canvas") >= 2 and b"[DONE]" not in seen, "the stream is mid-answer when the client leaves")
conn.sock.shutdown(2)
conn.close()
deadline = time.time() + 20
while health(SLOW)["served"]["stopped_early"] == before and time.time() < deadline:
    time.sleep(0.02)
h = settle(SLOW)
check(h["served"]["stopped_early"] == before + 1, "a client that disconnects stops its generation")
check(h["running"] == 0, "nothing runs after it")
r = client(SLOW).chat.completions.create(model="tiny-llada", messages=[{"role": "user", "content": PROMPT}])
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
    ("the mask token in a prompt", "POST", "/v1/completions", json.dumps({"prompt": "copy:<|mdm_mask|>"}).encode(), 400),
    ("editing asked of a LLaDA model", "POST", "/v1/chat/completions", chat_body(llada={"editing_threshold": 0.9}), 400),
    ("blocks that do not tile the answer", "POST", "/v1/chat/completions", chat_body(max_tokens=16, llada={"block_length": 5}), 400),
    ("an unknown route", "GET", "/v1/engines", b"", 404),
    ("a wrong method", "GET", "/v1/chat/completions", b"", 405),
]
for what, method, path, body, expected in cases:
    status, _, parsed = raw(MAIN, method, path, body)
    is_error(status, parsed, expected, what)
status, _, parsed = raw(MAIN, "POST", "/v1/chat/completions", chat_body(), {"content-type": "text/plain"})
is_error(status, parsed, 415, "a body that is not declared JSON (a cross-site form cannot send JSON)")
status, _, parsed = raw(MAIN, "POST", "/v1/chat/completions", chat_body(), {"content-type": "application/json", "host": "attacker.example"})
is_error(status, parsed, 403, "a Host that is not loopback (DNS rebinding)")
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
flood_barrier = threading.Barrier(6)


def flood():
    body = json.dumps({"messages": [{"role": "user", "content": PROMPT}]}).encode()
    flood_barrier.wait()
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
