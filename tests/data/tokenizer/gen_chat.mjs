// gen_chat.mjs: chat template references for the tokenizer tests.
//
// For every template in chat/templates/ writes chat/NAME.requests.jsonl (one
// kvf-tokenize --chat request per line: messages, add_generation_prompt and
// the special-token variables) and chat/NAME.expected.jsonl (the rendered
// prompt as a JSON string).
//  - llama3 and qwen3: the expected prompts are HF transformers'
//    apply_chat_template outputs (chat/NAME.hf.json, copied from
//    shared/reference/chat); this script also renders them with
//    @huggingface/jinja and stops if the two disagree.
//  - the other templates and the extra cases: rendered by @huggingface/jinja
//    (the Jinja implementation HF transformers.js uses), with transformers'
//    settings. Where it is known to differ from Python Jinja2 the case is
//    left out and covered by a unit test instead (docs/tokenizer.md).
import fs from "fs";
import path from "path";
import { createRequire } from "module";

const here = path.dirname(new URL(import.meta.url).pathname);
const require = createRequire(process.env.KVF_NODE_MODULES + "/");
const { Template } = require("@huggingface/jinja");
const chat = path.join(here, "chat");
const tpl = (n) => fs.readFileSync(path.join(chat, "templates", n + ".jinja"), "utf8");

const basic = JSON.parse(fs.readFileSync(path.join(chat, "llama3.hf.json"), "utf8")).map((c) => c.messages);
const extra = [
  [{ role: "user", content: "  padded content with spaces  \n" }],
  [{ role: "user", content: "Unicode: 日本語 🙂 é" }, { role: "assistant", content: "OK ✓" }, { role: "user", content: "Quotes ' and \" and \\ backslash" }],
  [{ role: "system", content: "Sys\nwith newline" }, { role: "user", content: "Q1" }, { role: "assistant", content: "A1" }, { role: "user", content: "Q2" }, { role: "assistant", content: "A2" }, { role: "user", content: "Q3" }],
];
const qwen3_extra = [
  { messages: [{ role: "user", content: "What is 2+2?" }, { role: "assistant", content: "<think>\nadd them\n</think>\n\n4" }, { role: "user", content: "And 3+3?" }], add_generation_prompt: true },
  { messages: [{ role: "user", content: "Think briefly." }], add_generation_prompt: true, enable_thinking: false },
  { messages: [{ role: "user", content: "Weather in Paris?" },
               { role: "assistant", content: "", tool_calls: [{ type: "function", function: { name: "get_weather", arguments: { city: "Paris", unit: "celsius" } } }] },
               { role: "tool", content: "{\"temp\": 21}" }, { role: "tool", content: "sunny" }],
    add_generation_prompt: true,
    tools: [{ type: "function", function: { name: "get_weather", description: "Get the weather", parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } }] },
  { messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }, { role: "assistant", content: "Hello", reasoning_content: "greet back" }, { role: "user", content: "Bye" }, { role: "assistant", content: "Goodbye" }], add_generation_prompt: false },
];

const specs = [
  { name: "llama3", vars: { bos_token: "<|begin_of_text|>", eos_token: "<|end_of_text|>" }, hf: "llama3.hf.json" },
  { name: "qwen3", vars: { eos_token: "<|im_end|>", pad_token: "<|endoftext|>" }, hf: "qwen3.hf.json", more: qwen3_extra },
  { name: "llama2", vars: { bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>" } },
  { name: "mistral", vars: { bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>" } },
  { name: "qwen2", vars: { eos_token: "<|im_end|>", pad_token: "<|endoftext|>" } },
  { name: "chatml", vars: { bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>" } },
];

for (const spec of specs) {
  const t = new Template(tpl(spec.name));
  let cases;
  if (spec.hf) {
    cases = JSON.parse(fs.readFileSync(path.join(chat, spec.hf), "utf8"))
      .map((c) => ({ req: { messages: c.messages, add_generation_prompt: c.add_generation_prompt }, want: c.rendered }));
  } else {
    cases = [];
    for (const m of basic.concat(extra))
      for (const g of [true, false]) cases.push({ req: { messages: m, add_generation_prompt: g } });
  }
  for (const r of spec.more || []) cases.push({ req: r });
  const reqs = [], outs = [];
  for (const c of cases) {
    const req = { ...c.req, ...spec.vars };
    let js;
    try {
      js = t.render(req); /* raise_exception is built in */
    } catch (e) {
      if (process.env.DEBUG) console.error(spec.name, String(e).slice(0, 300));
      continue; /* templates that raise (e.g. mistral with a system turn) are unit-tested */
    }
    if (c.want !== undefined && js !== c.want)
      throw new Error(`${spec.name}: @huggingface/jinja disagrees with HF on ${JSON.stringify(c.req)}`);
    reqs.push(JSON.stringify(req));
    outs.push(JSON.stringify(c.want !== undefined ? c.want : js));
  }
  fs.writeFileSync(path.join(chat, spec.name + ".requests.jsonl"), reqs.join("\n") + "\n");
  fs.writeFileSync(path.join(chat, spec.name + ".expected.jsonl"), outs.join("\n") + "\n");
  console.log(`${spec.name}: ${reqs.length} cases${spec.hf ? " (HF references, @huggingface/jinja agrees)" : ""}`);
}
