// tokenizer_node_bench.mjs TOKENIZER_DIR CORPUS: the baseline of
// bench/tokenizer_bench.sh: @lenml/tokenizers (transformers.js's tokenizer)
// encoding the same lines under node, one core. Prints one JSON line.
import fs from "fs";
import { createRequire } from "module";

const require = createRequire(process.env.KVF_NODE_MODULES + "/");
const { TokenizerLoader } = require("@lenml/tokenizers");
const [dir, corpus] = process.argv.slice(2);
const tok = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(fs.readFileSync(dir + "/tokenizer.json", "utf8")),
  tokenizerConfig: JSON.parse(fs.readFileSync(dir + "/tokenizer_config.json", "utf8")),
});
const text = fs.readFileSync(corpus, "utf8");
const lines = text.split(/(?<=\n)/);
const bytes = Buffer.byteLength(text, "utf8");
let tokens = 0;
const t0 = process.hrtime.bigint();
for (const l of lines) tokens += tok.encode(l, { add_special_tokens: false }).length;
const s = Number(process.hrtime.bigint() - t0) / 1e9;
console.log(JSON.stringify({ bytes, tokens, seconds: s, mb_per_s: bytes / s / 1e6 }));
