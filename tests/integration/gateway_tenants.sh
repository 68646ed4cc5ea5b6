#!/usr/bin/env bash
# Tenants through the real kvf-gateway: API keys (config and key file), 401
# without a valid key, per-tenant requests/s, tokens/s and concurrency limits
# answered 429 with Retry-After, the tenant salt sent to workers, and cache
# isolation: one tenant's cached prefix never attracts another tenant.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/gateway_common.bash"

start_fixture d1 || { kvf_done; exit; }
start_fixture d2 || { kvf_done; exit; }
start_fixture slow --interval-ms 300 --tokens 3 || { kvf_done; exit; }
D1=127.0.0.1:${FIX_PORT[d1]} D2=127.0.0.1:${FIX_PORT[d2]}
cat >"$KVF_TMP/tenants.json" <<EOF
{"tenants": [
  {"name": "limited", "keys": ["sk-limited-0001"], "rps": 1, "burst": 2},
  {"name": "tokens", "keys": ["sk-tokens-00001"], "tps": 50},
  {"name": "serial", "keys": ["sk-serial-00001"], "max_concurrency": 1},
  {"name": "partner", "keys": ["sk-partner-0001"], "salt": "acme"}
]}
EOF
start_gateway gw -o "gateway.decode_workers=$D1,$D2" -o gateway.model=test-model \
  -o "gateway.tokenizer=$SMALL_TOK" -o gateway.auth=true \
  -o "gateway.api_keys=acme:sk-acme-000001,globex:sk-globex-00001" \
  -o "gateway.tenants_file=$KVF_TMP/tenants.json" -o gateway.pd_threshold_tokens=0 || { kvf_done; exit; }
REQ='{"model":"test-model","prompt":"hello","max_tokens":1}'

# ---- auth ----
st=$(post /v1/completions "$REQ")
check_eq "no key is 401" 401 "$st"
check_contains "401 is OpenAI error JSON" "$(body)" '"type":"authentication_error"'
check_contains "401 code" "$(body)" '"code":"invalid_api_key"'
check_eq "401 asks for Bearer" "Bearer" "$(hdr www-authenticate)"
st=$(post /v1/completions "$REQ" -H 'Authorization: Bearer sk-wrong-000001')
check_eq "wrong key is 401" 401 "$st"
check_eq "/v1/models needs a key too" 401 "$(curl -s -o /dev/null -w '%{http_code}' "$GW_URL/v1/models")"
check_eq "/health needs none" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$GW_URL/health")"
st=$(post /v1/completions "$REQ" -H 'Authorization: Bearer sk-acme-000001')
check_eq "valid key is 200" 200 "$st"
check_eq "tenant salt sent to the worker" "acme" "$(hdr x-fixture-tenant)"
st=$(post /v1/completions "$REQ" -H 'x-api-key: sk-globex-00001')
check_eq "x-api-key works too" 200 "$st"
check_eq "key file tenant with its own salt" 200 "$(post /v1/completions "$REQ" -H 'Authorization: Bearer sk-partner-0001')"
check_eq "partner shares acme's salt by configuration" "acme" "$(hdr x-fixture-tenant)"

# ---- requests/s: burst 2 at 1/s ----
codes=""
for i in 1 2 3; do codes+="$(post /v1/completions "$REQ" -H 'Authorization: Bearer sk-limited-0001') "; done
check_eq "burst of 2 then 429" "200 200 429 " "$codes"
check_contains "429 is OpenAI rate_limit_error" "$(body)" '"type":"rate_limit_error"'
ra=$(hdr retry-after)
if [ -n "$ra" ] && [ "$ra" -ge 1 ] && [ "$ra" -le 2 ]; then pass "429 has Retry-After ($ra s)"; else fail "429 has Retry-After" "[$ra]"; fi
check_eq "another tenant is not limited" 200 "$(post /v1/completions "$REQ" -H 'Authorization: Bearer sk-globex-00001')"
sleep "$ra"
check_eq "after Retry-After the tenant is served" 200 "$(post /v1/completions "$REQ" -H 'Authorization: Bearer sk-limited-0001')"

# ---- tokens/s: 50/s; a ~200-token prompt puts the tenant in debt ----
BIG=$(long_prompt 8 tokens)
check_eq "first big request admitted" 200 "$(post /v1/completions "{\"model\":\"test-model\",\"prompt\":\"$BIG\",\"max_tokens\":1}" -H 'Authorization: Bearer sk-tokens-00001')"
st=$(post /v1/completions "$REQ" -H 'Authorization: Bearer sk-tokens-00001')
check_eq "tokens/s debt gives 429" 429 "$st"
check_contains "429 says tokens per second" "$(body)" "tokens per second"
ra=$(hdr retry-after)
if [ -n "$ra" ] && [ "$ra" -ge 2 ]; then pass "Retry-After covers the token debt ($ra s)"; else fail "Retry-After covers the token debt" "[$ra]"; fi

# ---- concurrency cap: 1 in flight ----
start_gateway gw2 -o "gateway.decode_workers=127.0.0.1:${FIX_PORT[slow]}" -o gateway.model=test-model \
  -o gateway.auth=true -o "gateway.tenants_file=$KVF_TMP/tenants.json" || { kvf_done; exit; }
curl -s -o /dev/null -H 'Authorization: Bearer sk-serial-00001' -H 'Content-Type: application/json' \
  --data-binary '{"model":"test-model","prompt":"slow","max_tokens":3,"stream":true}' "$GW_URL/v1/completions" &
BG=$!
sleep 0.3
st=$(post /v1/completions "$REQ" -H 'Authorization: Bearer sk-serial-00001')
check_eq "second concurrent request is 429" 429 "$st"
check_contains "429 says concurrent requests" "$(body)" "concurrent requests"
wait "$BG"
check_eq "after the first finished: served" 200 "$(post /v1/completions "$REQ" -H 'Authorization: Bearer sk-serial-00001')"
out=$("$KVFCTL" -s "$GW_SOCK" show tenants)
check_contains "show tenants counts rejections" "$out" "rejected=rate:0,tokens:0,concurrency:1"

# ---- cache isolation between tenants (gateway 1, local index) ----
GW_URL=http://127.0.0.1:$(port_of gw)
PRE=$(long_prompt 20 "iso$RANDOM")
post /v1/completions "{\"model\":\"test-model\",\"prompt\":\"$PRE a\",\"max_tokens\":1}" -H 'Authorization: Bearer sk-acme-000001' >/dev/null
acme_w=$(hdr x-kvf-decode)
post /v1/completions "{\"model\":\"test-model\",\"prompt\":\"$PRE b\",\"max_tokens\":1}" -H 'Authorization: Bearer sk-acme-000001' >/dev/null
check_contains "same tenant hits its prefix" "$(hdr x-kvf-route)" "prefix;hit="
check_eq "same tenant: same worker" "$acme_w" "$(hdr x-kvf-decode)"
post /v1/completions "{\"model\":\"test-model\",\"prompt\":\"$PRE b\",\"max_tokens\":1}" -H 'Authorization: Bearer sk-globex-00001' >/dev/null
check_contains "other tenant: no hit on the same prompt" "$(hdr x-kvf-route)" "hit=0/"
check_eq "other tenant: 0 cached tokens" 0 "$(hdr x-kvf-cached-tokens)"
post /v1/completions "{\"model\":\"test-model\",\"prompt\":\"$PRE c\",\"max_tokens\":1}" -H 'Authorization: Bearer sk-partner-0001' >/dev/null
check_contains "a tenant sharing the salt shares the cache" "$(hdr x-kvf-route)" "prefix;hit="

# ---- config errors ----
out=$("$GATEWAY" -o gateway.auth=true 2>&1); rc=$?
check_eq "auth without keys refuses to start" 1 "$rc"
check_contains "auth without keys explained" "$out" "no API key is configured"
out=$("$GATEWAY" -o gateway.api_keys=nocolon 2>&1); rc=$?
check_eq "bad api_keys entry exits 2" 2 "$rc"
check_contains "bad api_keys entry named" "$out" "gateway.api_keys[0]"
# ---- tenants do not share the tokenizer's segment cache ----
# (a hit is faster: sharing it would let one tenant time another's prompts)
segs() { curl -s "$GW_URL/metrics" | awk -v r="$1" '$1 == "kvf_gateway_tokenizer_segment_cache_total{result=\""r"\"}" {print $2}'; }
LONGP=$(long_prompt 30 "private$RANDOM")
LREQ="{\"model\":\"test-model\",\"prompt\":\"$LONGP\",\"max_tokens\":1}"
h0=$(segs hit); m0=$(segs miss)
post /v1/completions "$LREQ" -H 'Authorization: Bearer sk-acme-000001' >/dev/null
post /v1/completions "$LREQ" -H 'Authorization: Bearer sk-acme-000001' >/dev/null
check_eq "segment cache: the same tenant's repeat is a hit" "$(( ${h0:-0} + 1 )) $(( ${m0:-0} + 1 ))" "$(segs hit) $(segs miss)"
post /v1/completions "$LREQ" -H 'x-api-key: sk-globex-00001' >/dev/null
check_eq "segment cache: another tenant's same prompt is a miss" "$(( ${h0:-0} + 1 )) $(( ${m0:-0} + 2 ))" "$(segs hit) $(segs miss)"

echo '{"tenants":[{"name":"x y","keys":["sk-abcdefgh"]}]}' >"$KVF_TMP/bad.json"
out=$("$GATEWAY" -o "gateway.tenants_file=$KVF_TMP/bad.json" -o gateway.http_listen=127.0.0.1:0 2>&1); rc=$?
check_eq "bad tenants file refuses to start" 1 "$rc"
check_contains "bad tenants file explained" "$out" "bad.json: tenants[0]"
kvf_done
