"""What an OpenAI client sees from a single worker (aggregated mode).

usage: worker_api_checks.py PORT ADMIN_SOCKET MODEL_NAME REFERENCE_JSON REQUESTS_FIXTURE
"""
import json
import sys
import threading
import time

from kvftest import (admin, check, check_eq, done, fail, ok, post_json, request,
                     stream)

port = int(sys.argv[1])
sock = sys.argv[2]
model = sys.argv[3]
ref = json.load(open(sys.argv[4]))
fixture = json.load(open(sys.argv[5]))
H = "127.0.0.1"

# ---- models and the real engine behind the API ----
st, _, js = post_json(H, port, "/v1/models", None) if False else (None, None, None)
st, _, out = request(H, port, "GET", "/v1/models")
js = json.loads(out)
check_eq("/v1/models lists the served model", [model], [m["id"] for m in js["data"]])

# Greedy generation through the API equals HF transformers' greedy_20.
for i in range(2):
    st, h, js = post_json(H, port, "/v1/completions", {
        "model": model, "prompt": ref["inputs"][i], "max_tokens": 20, "temperature": 0,
        "ignore_eos": True, "return_token_ids": True})
    check_eq(f"greedy via API equals HF reference (input {i})", ref["greedy_20"][i],
             js["choices"][0].get("token_ids") if st == 200 else js)
    check_eq(f"usage counts tokens (input {i})", (len(ref["inputs"][i]), 20),
             (js["usage"]["prompt_tokens"], js["usage"]["completion_tokens"]))

# ---- streaming equals non-streaming ----
body = {"model": model, "prompt": "def add(a, b):\n    return", "max_tokens": 24, "temperature": 0,
        "ignore_eos": True}
st, h, whole = post_json(H, port, "/v1/completions", body)
text = whole["choices"][0]["text"]
st, h, chunks, saw_done, _ = stream(H, port, "/v1/completions", dict(body, stream=True,
                                    stream_options={"include_usage": True}))
check_eq("stream: status 200 and text/event-stream", (200, "text/event-stream"),
         (st, h.get("content-type")))
check("stream: ends with [DONE]", saw_done)
streamed = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
check_eq("stream: concatenated text equals the whole response", text, streamed)
finals = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
check_eq("stream: one final chunk with finish_reason length", ["length"], finals)
usage = [c["usage"] for c in chunks if c.get("usage")]
check("stream: include_usage sends a usage chunk last",
      len(usage) == 1 and chunks[-1].get("usage") and chunks[-1]["choices"] == []
      and usage[0]["completion_tokens"] == 24, chunks[-1])
check("stream: x-kvf headers present", "x-kvf-computed-tokens" in h, h)

# Chat, streamed: role first, then content.
st, h, chunks, saw_done, _ = stream(H, port, "/v1/chat/completions", {
    "model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 6,
    "stream": True, "temperature": 0})
check("chat stream: first delta carries the role",
      chunks and chunks[0]["choices"][0]["delta"].get("role") == "assistant", chunks[:1])
check_eq("chat stream: object type", "chat.completion.chunk", chunks[-1]["object"] if chunks else None)
st, h, js = post_json(H, port, "/v1/chat/completions", {
    "model": model, "messages": [{"role": "system", "content": "be brief"},
                                 {"role": "user", "content": [{"type": "text", "text": "hello"}]}],
    "max_tokens": 6, "temperature": 0, "logprobs": True, "top_logprobs": 2})
lp = js["choices"][0]["logprobs"]["content"] if st == 200 else []
check("chat: logprobs with 2 alternatives per token",
      len(lp) == js["usage"]["completion_tokens"] and all(len(t["top_logprobs"]) == 2 for t in lp)
      and all(t["logprob"] <= 0 for t in lp), js)

# ---- prefix cache: a second request sharing a long prefix computes less ----
prefix = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(8))
st, h1, js1 = post_json(H, port, "/v1/completions", {"model": model, "prompt": prefix + "A", "max_tokens": 2})
st, h2, js2 = post_json(H, port, "/v1/completions", {"model": model, "prompt": prefix + "B", "max_tokens": 2})
c1, c2 = int(h1["x-kvf-computed-tokens"]), int(h2["x-kvf-computed-tokens"])
cached2 = int(h2["x-kvf-cached-tokens"])
check("prefix cache: second request reuses cached blocks", cached2 >= 64 and c2 < c1,
      f"first computed {c1}, second computed {c2} cached {cached2}")
check_eq("prefix cache: usage reports cached_tokens", cached2,
         js2["usage"]["prompt_tokens_details"]["cached_tokens"])
# Another tenant never hits this tenant's cache.
st, h3, _ = post_json(H, port, "/v1/completions", {"model": model, "prompt": prefix + "B", "max_tokens": 2},
                      headers={"x-kvf-tenant": "other"})
check_eq("prefix cache: tenants are isolated", "0", h3.get("x-kvf-cached-tokens"))

# ---- stop strings ----
st, _, js = post_json(H, port, "/v1/completions", {"model": model, "prompt": "def f(x):\n", "max_tokens": 30,
                                                   "temperature": 0, "ignore_eos": True})
full = js["choices"][0]["text"]
if len(full) >= 8:
    stop = full[4:7]
    st, _, js = post_json(H, port, "/v1/completions", {"model": model, "prompt": "def f(x):\n",
                                                       "max_tokens": 30, "temperature": 0, "ignore_eos": True,
                                                       "stop": [stop]})
    got = js["choices"][0]
    check("stop string: text ends before it, finish_reason stop",
          got["finish_reason"] == "stop" and full.startswith(got["text"]) and stop not in got["text"]
          and len(got["text"]) <= full.index(stop), (full, stop, got))
    st, h, chunks, _, _ = stream(H, port, "/v1/completions", {"model": model, "prompt": "def f(x):\n",
                                                              "max_tokens": 30, "temperature": 0,
                                                              "ignore_eos": True, "stop": [stop], "stream": True})
    check_eq("stop string: streamed text never shows it", got["text"],
             "".join(c["choices"][0]["text"] for c in chunks if c["choices"]))
else:
    fail("stop string", f"greedy text too short to cut a stop string from: {full!r}")

# Sampling with a seed is reproducible.
b = {"model": model, "prompt": "hello", "max_tokens": 12, "temperature": 0.9, "top_p": 0.9, "seed": 7,
     "return_token_ids": True, "ignore_eos": True}
a1 = post_json(H, port, "/v1/completions", b)[2]["choices"][0]["token_ids"]
a2 = post_json(H, port, "/v1/completions", b)[2]["choices"][0]["token_ids"]
check_eq("seed: same seed, same tokens", a1, a2)

# ---- the request fixture: every accepted shape runs, every bad one is a 400 with the param ----
n_ok = n_bad = 0
for c in fixture["cases"]:
    bodyc = dict(c["body"])
    path = "/v1/chat/completions" if c["endpoint"] == "chat" else "/v1/completions"
    if "model" in bodyc:
        bodyc["model"] = model
    if c["ok"]:
        bodyc["max_tokens"] = 2
        bodyc.pop("max_completion_tokens", None)
        if isinstance(bodyc.get("prompt"), list) and bodyc["prompt"] and isinstance(bodyc["prompt"][0], int):
            bodyc["prompt"] = [t % 300 for t in bodyc["prompt"]]
        if isinstance(bodyc.get("prompt"), list) and bodyc["prompt"] and isinstance(bodyc["prompt"][0], list):
            bodyc["prompt"] = [[t % 300 for t in bodyc["prompt"][0]]]
        bodyc.pop("stop_token_ids", None)
        if bodyc.get("stream"):
            st, _, chunks, saw, _ = stream(H, port, path, bodyc)
            good = st == 200 and saw
        else:
            st, _, js = post_json(H, port, path, bodyc)
            good = st == 200 and js.get("choices")
        if good:
            n_ok += 1
        else:
            fail(f"fixture ok case: {c['name']}", f"status {st}")
    else:
        st, _, js = post_json(H, port, path, bodyc)
        err = (js or {}).get("error", {})
        if st == 400 and err.get("param") == c["param"] and err.get("message"):
            n_bad += 1
        else:
            fail(f"fixture bad case: {c['name']}", f"status {st} body {js}")
check("fixture: every valid request shape answered", n_ok == sum(1 for c in fixture["cases"] if c["ok"]), n_ok)
check("fixture: every invalid shape is a 400 naming the param",
      n_bad == sum(1 for c in fixture["cases"] if not c["ok"]), n_bad)

# ---- errors: OpenAI error JSON, the worker keeps serving ----
def expect_error(name, path, raw, status, param=None):
    st, _, out = request(H, port, "POST", path, raw)
    try:
        err = json.loads(out)["error"]
    except (ValueError, KeyError):
        fail(name, f"not an OpenAI error body: {out[:200]!r}")
        return
    check(name, st == status and err.get("message") and err.get("type") and (param is None or err.get("param") == param),
          f"status {st} error {err}")

expect_error("invalid JSON is a 400", "/v1/completions", b'{"model": ', 400)
expect_error("unknown model is a 404", "/v1/completions",
             json.dumps({"model": "nope", "prompt": "x"}).encode(), 404, "model")
expect_error("max_tokens beyond the context is a 400", "/v1/completions",
             json.dumps({"model": model, "prompt": "x", "max_tokens": 100000}).encode(), 400, "max_tokens")
expect_error("prompt longer than the context is a 400", "/v1/completions",
             json.dumps({"model": model, "prompt": [5] * 5000}).encode(), 400, "prompt")
expect_error("token id outside the vocabulary is a 400", "/v1/completions",
             json.dumps({"model": model, "prompt": [1, 99999999]}).encode(), 400, "prompt")
expect_error("wrong type is a 400", "/v1/completions",
             json.dumps({"model": model, "prompt": "x", "temperature": "hot"}).encode(), 400, "temperature")
st, _, _ = request(H, port, "GET", "/v1/completions")
check_eq("GET on a POST route is a 405", 405, st)
st, _, js = post_json(H, port, "/v1/completions", {"model": model, "prompt": "still here", "max_tokens": 1})
check_eq("worker keeps serving after bad requests", 200, st)

# ---- 64 concurrent streaming requests ----
results = []
lock = threading.Lock()

def one(i):
    n = 3 + i % 5
    try:
        st, h, chunks, saw, _ = stream(H, port, "/v1/completions", {
            "model": model, "prompt": f"request {i}: " + "x" * (i % 40), "max_tokens": n,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}, timeout=120)
        u = chunks[-1].get("usage", {})
        good = st == 200 and saw and u.get("completion_tokens") == n
    except Exception as e:  # noqa: BLE001 - a failed request is a test failure
        good = False
    with lock:
        results.append(good)

threads = [threading.Thread(target=one, args=(i,)) for i in range(64)]
for t in threads:
    t.start()
for t in threads:
    t.join()
check_eq("64 concurrent streams complete with the right usage", 64, sum(results))

# ---- client disconnect cancels the request ----
import http.client  # noqa: E402
c = http.client.HTTPConnection(H, port, timeout=30)
c.request("POST", "/v1/completions", body=json.dumps({
    "model": model, "prompt": "long one", "max_tokens": 400, "ignore_eos": True, "stream": True}).encode(),
    headers={"Content-Type": "application/json"})
r = c.getresponse()
r.read1(100)
c.close()
deadline = time.time() + 10
while time.time() < deadline:
    stats = admin(sock, "show stats")
    if 'kvf_worker_requests_total{outcome="cancelled"} 1' in stats and "requests_running 0" in stats:
        break
    time.sleep(0.05)
check("client disconnect cancels the request", 'kvf_worker_requests_total{outcome="cancelled"} 1' in stats, stats)
reqs = admin(sock, "show requests")
check("no request left in flight", len(reqs.strip().splitlines()) == 1, reqs)

# ---- operations ----
stats = admin(sock, "show stats")
for name in ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc",
             "kvf_worker_time_to_first_token_seconds", "kvf_worker_inter_token_latency_seconds",
             "kvf_worker_e2e_request_latency_seconds", "kvf_worker_prefix_cache_hit_ratio"):
    check(f"metric {name} exported", name in stats)
kv = admin(sock, "show kv json")
check("show kv json", json.loads(kv)["cached"] > 0, kv)
st, _, body = request(H, port, "GET", "/metrics")
check("/metrics has the vLLM gauges", b"vllm:kv_cache_usage_perc" in body)
done()
