#!/usr/bin/env bash
# Regenerates the committed references of the tokenizer tests:
#   corpus.jsonl              (make_corpus.py)
#   expected/NAME.*           (gen_expected.mjs: @lenml/tokenizers under node)
#   chat/*.ref.json           (gen_chat.mjs: @huggingface/jinja under node)
# Needs node and npm; fetches the npm packages into $KVF_ROOT/.cache/.
# make test does not run this: it compares against the committed files.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
cache="$root/.cache"
"$here/fetch_npm.sh" "$cache/npm"
mkdir -p "$cache/node"
if [ ! -d "$cache/node/node_modules/@lenml/tokenizers" ] || [ ! -d "$cache/node/node_modules/@huggingface/jinja" ]; then
  (cd "$cache/node" && { [ -f package.json ] || echo '{"private":true}' > package.json; } &&
   npm install --no-audit --no-fund --silent @lenml/tokenizers@3.7.2 @huggingface/jinja@0.5.11 >/dev/null)
fi
export KVF_NODE_MODULES="$cache/node/node_modules"
/usr/bin/python3 "$here/make_corpus.py"
node "$here/gen_expected.mjs" \
  llama2 "$cache/npm/llama2/package/models" \
  llama3 "$cache/npm/llama3/package/models" \
  qwen3 "$cache/npm/qwen3/package/models" \
  small "$here/small"
node "$here/gen_chat.mjs"
