// gen_expected.mjs: reference ids and decodes for the conformance corpus,
// produced by @lenml/tokenizers (transformers.js's tokenizer code) under node.
//
//   node gen_expected.mjs NAME TOKENIZER_DIR [NAME DIR ...]
//
// For each NAME writes, one line per line of corpus.jsonl:
//   expected/NAME.ids          encode(s, {add_special_tokens: false})
//   expected/NAME.special.ids  encode(s, {add_special_tokens: true})
//   expected/NAME.decoded      decode(ids, {skip_special_tokens: false,
//                              clean_up_tokenization_spaces: false}) as a JSON string
// The ids are the library's answers unedited: on this corpus they agree with
// HF tokenizers' semantics everywhere (docs/tokenizer.md discusses the known
// differences of the JavaScript implementation and why they do not show).
// Run by tests/data/tokenizer/regen.sh; node is not needed by make test.
import fs from "fs";
import path from "path";
import { createRequire } from "module";

const here = path.dirname(new URL(import.meta.url).pathname);
const require = createRequire(process.env.KVF_NODE_MODULES + "/");
const { TokenizerLoader } = require("@lenml/tokenizers");

const corpus = fs.readFileSync(path.join(here, "corpus.jsonl"), "utf8")
  .split("\n").filter((l) => l.length).map((l) => JSON.parse(l));

const args = process.argv.slice(2);
for (let a = 0; a + 1 < args.length; a += 2) {
  const name = args[a], dir = args[a + 1];
  const tj = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
  const tc = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
  const tok = TokenizerLoader.fromPreTrained({ tokenizerJSON: tj, tokenizerConfig: tc });
  const ids = [], sids = [], dec = [];
  corpus.forEach((s) => {
    const a = tok.encode(s, { add_special_tokens: false });
    const b = tok.encode(s, { add_special_tokens: true });
    ids.push(JSON.stringify(a));
    sids.push(JSON.stringify(b));
    const d = a.length ? tok.decode(a, { skip_special_tokens: false, clean_up_tokenization_spaces: false }) : "";
    dec.push(JSON.stringify(d));
  });
  fs.writeFileSync(path.join(here, "expected", name + ".ids"), ids.join("\n") + "\n");
  fs.writeFileSync(path.join(here, "expected", name + ".special.ids"), sids.join("\n") + "\n");
  fs.writeFileSync(path.join(here, "expected", name + ".decoded"), dec.join("\n") + "\n");
  console.log(`${name}: ${corpus.length} strings`);
}
