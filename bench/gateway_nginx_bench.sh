#!/usr/bin/env bash
# make bench-gateway-nginx: kvf-gateway's overhead next to nginx proxy_pass
# on the same upstream, measured with wrk in one run.
#   upstream  kvf-upstream-fixture answering a small non-streaming completion
#   direct    wrk -> upstream (the floor)
#   nginx     wrk -> nginx (1 worker, keepalive upstream pool) -> upstream
#   gateway   wrk -> kvf-gateway (1 loop thread; parses, tokenizes, keys,
#             looks up and scores every request) -> upstream
# Each configuration runs ROUNDS times alternating; the best round counts.
# Ratios: gateway req/s / nginx req/s (target >= 1.0) and added p50 latency
# (gateway p50 - direct p50) vs (nginx p50 - direct p50) (target <=).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KVF_BUILD:-$root/build}
out=${BENCH_OUT:-$build/bench/gateway-nginx.json}
DUR=${DUR:-5} CONNS=${CONNS:-32} ROUNDS=${ROUNDS:-2}
command -v nginx >/dev/null || { echo "bench-gateway-nginx: nginx not installed (apt-get install nginx-light)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "bench-gateway-nginx: wrk not installed (apt-get install wrk)" >&2; exit 1; }
work=$(mktemp -d /tmp/kvf-gwnginx.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.2; rm -rf "$work"; }
trap cleanup EXIT
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitport() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

UP=$(port); NG=$(port); GW=$(port)
"$build/tests/bin/kvf-upstream-fixture" --name up --listen "127.0.0.1:$UP" --model test-model --tokens 1 >"$work/up.log" 2>&1 &
pids+=($!)
mkdir -p "$work/nginx/logs"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
error_log $work/nginx/logs/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server {
    listen 127.0.0.1:$NG;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' >"$work/nginx.log" 2>&1 &
pids+=($!)
"$build/bin/kvf-gateway" -o "gateway.http_listen=127.0.0.1:$GW" -o gateway.admin_socket= -o gateway.log_level=warn \
  -o "gateway.decode_workers=127.0.0.1:$UP" -o gateway.model=test-model \
  -o "gateway.tokenizer=$root/tests/data/tokenizer/small" >"$work/gw.log" 2>&1 &
pids+=($!)
waitport "$UP" && waitport "$NG" && waitport "$GW" || { echo "bench-gateway-nginx: a server did not start" >&2; cat "$work"/*.log >&2; exit 1; }
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"test-model","prompt":"Summarize the following in one sentence: the gateway routes requests to the worker that holds the prompt prefix in its KV cache.","max_tokens":1}'
wrk.headers["Content-Type"] = "application/json"
LUA
run() { # run NAME PORT -> "rps p50_ms"
  wrk -t1 -c"$CONNS" -d"${DUR}s" --latency -s "$work/post.lua" "http://127.0.0.1:$2/v1/completions" >"$work/$1.wrk" 2>&1
  /usr/bin/python3 - "$work/$1.wrk" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
m = re.search(r"\n\s+50%\s+([\d.]+)(us|ms|s)", t)
v = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(rps, v, bad.group(1) if bad else 0)
PY
}
# Warm every path once.
for p in "$UP" "$NG" "$GW"; do curl -s -o /dev/null -H 'Content-Type: application/json' \
  -d '{"model":"test-model","prompt":"warm","max_tokens":1}' "http://127.0.0.1:$p/v1/completions"; done
declare -A best_rps best_p50
for r in $(seq 1 "$ROUNDS"); do
  for cfg in direct nginx gateway; do
    case $cfg in direct) p=$UP ;; nginx) p=$NG ;; gateway) p=$GW ;; esac
    read -r rps p50 bad < <(run "$cfg" "$p")
    [ "$bad" = 0 ] || { echo "bench-gateway-nginx: $cfg answered $bad non-2xx" >&2; exit 1; }
    echo "round $r $cfg: $rps req/s, p50 $p50 ms"
    if [ -z "${best_rps[$cfg]:-}" ] || /usr/bin/python3 -c "import sys; sys.exit(not ($rps > ${best_rps[$cfg]}))"; then
      best_rps[$cfg]=$rps; best_p50[$cfg]=$p50
    fi
  done
done
/usr/bin/python3 - "$out" "${best_rps[direct]}" "${best_p50[direct]}" "${best_rps[nginx]}" "${best_p50[nginx]}" \
  "${best_rps[gateway]}" "${best_p50[gateway]}" "$CONNS" "$DUR" <<'PY'
import json, sys
o, dr, dp, nr, np_, gr, gp, conns, dur = sys.argv[1:]
dr, dp, nr, np_, gr, gp = map(float, (dr, dp, nr, np_, gr, gp))
res = {"connections": int(conns), "duration_s": float(dur),
       "direct": {"rps": dr, "p50_ms": dp}, "nginx": {"rps": nr, "p50_ms": np_}, "gateway": {"rps": gr, "p50_ms": gp},
       "added_p50_ms": {"nginx": round(np_ - dp, 4), "gateway": round(gp - dp, 4)},
       "ratios": {"gateway_over_nginx_rps": round(gr / nr, 3),
                  "gateway_added_p50_over_nginx_added_p50": round((gp - dp) / (np_ - dp), 3) if np_ > dp else None}}
json.dump(res, open(o, "w"), indent=1)
print("gateway/nginx req/s = %.3f (target >= 1.0); added p50: gateway %.3f ms, nginx %.3f ms" %
      (gr / nr, gp - dp, np_ - dp))
PY
