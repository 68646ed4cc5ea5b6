#!/usr/bin/env bash
# Chat templates: kvf-tokenize --chat renders the committed requests of
# tests/data/tokenizer/chat/ exactly like the references: HF transformers'
# apply_chat_template for Llama-3 and Qwen3 (*.hf.json), @huggingface/jinja
# for the Llama-2, Mistral, Qwen2 and ChatML templates and the Qwen3 tool /
# reasoning cases. Also: the model directory's own template is used without
# --template, and errors raised by a template reach the caller.
source "$(dirname "$0")/../lib.sh"
D="$KVF_ROOT/tests/data/tokenizer"
TOK="$BIN/kvf-tokenize"

for name in llama3 qwen3 llama2 mistral qwen2 chatml; do
  if ! "$TOK" -t "$D/small" --chat --template "$D/chat/templates/$name.jinja" \
      <"$D/chat/$name.requests.jsonl" >"$KVF_TMP/$name.out" 2>"$KVF_TMP/$name.err"; then
    fail "chat-$name" "kvf-tokenize --chat failed: $(head -c 300 "$KVF_TMP/$name.err")"
  elif cmp -s "$KVF_TMP/$name.out" "$D/chat/$name.expected.jsonl"; then
    pass "chat-$name ($(wc -l <"$D/chat/$name.requests.jsonl") cases)"
  else
    fail "chat-$name" "$(diff "$KVF_TMP/$name.out" "$D/chat/$name.expected.jsonl" | head -c 600)"
  fi
done

# a second reference: Python Jinja2, the engine HF transformers runs
/usr/bin/python3 "$KVF_ROOT/tests/integration/py/chat_jinja2.py" "$D/chat" || KVF_FAILS=$((KVF_FAILS + 1))

# the model directory's own chat_template (tokenizer_config.json), with its bos/eos
out=$(echo '{"messages":[{"role":"user","content":"Hi"}],"add_generation_prompt":true}' | "$TOK" -t "$D/small" --chat)
check_eq "chat-model-template" '"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"' "$out"

# the rendered prompt tokenizes with the special tokens recognised
ids=$(echo "$out" | "$TOK" -t "$D/small")
# reference: @lenml/tokenizers on the same string
check_eq "chat-prompt-ids" "[3,89,266,86,203,44,77,4,203,3,69,327,77,282,69,321,203]" "$ids"

# raise_exception() surfaces as an error with the template's message
err=$(echo '{"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}' |
  "$TOK" -t "$D/small" --chat --template "$D/chat/templates/mistral.jinja" 2>&1 >/dev/null)
rc=$?
[ $rc -ne 0 ] && [[ "$err" == *"Conversation roles must alternate"* ]] &&
  pass "chat-raise-exception" || fail "chat-raise-exception" "rc=$rc err=$err"

# a template with a syntax error is refused with its line number
printf '{%% if x %%}\n{{ oops(\n' >"$KVF_TMP/bad.jinja"
err=$(echo '{"messages":[]}' | "$TOK" -t "$D/small" --chat --template "$KVF_TMP/bad.jinja" 2>&1 >/dev/null)
[[ "$err" == *"line 2"* ]] && pass "chat-template-syntax-error" || fail "chat-template-syntax-error" "$err"
kvf_done
