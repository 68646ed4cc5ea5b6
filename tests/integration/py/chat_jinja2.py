"""Renders the chat-template cases with Python Jinja2, configured the way HF
transformers' apply_chat_template configures it, and compares with the
committed expected prompts (which kvf-tokenize --chat must also produce).

This is a second, independent reference beside @huggingface/jinja: Python
Jinja2 is the engine transformers itself runs. transformers' environment:
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
extensions=[loopcontrols]) with a `tojson` filter that keeps non-ASCII
(ensure_ascii=False), `raise_exception` and `strftime_now` globals; the
request's variables (messages, tools, add_generation_prompt, special tokens,
enable_thinking...) are passed to render(). transformers' AssistantTracker
extension only serves {% generation %} blocks, which none of these templates
use.

usage: chat_jinja2.py CHAT_DIR
"""
import json
import os
import sys
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kvftest as t  # noqa: E402

try:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    print("SKIP: chat-jinja2: python3-jinja2 is not installed (scripts/install-deps.sh installs it)")
    sys.exit(0)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)

chat = sys.argv[1]
for name in sorted(f[:-6] for f in os.listdir(os.path.join(chat, "templates")) if f.endswith(".jinja")):
    tpl = env.from_string(open(os.path.join(chat, "templates", name + ".jinja")).read())
    reqs = [json.loads(x) for x in open(os.path.join(chat, name + ".requests.jsonl"))]
    want = [json.loads(x) for x in open(os.path.join(chat, name + ".expected.jsonl"))]
    bad = []
    for i, (req, exp) in enumerate(zip(reqs, want)):
        try:
            got = tpl.render(**req)
        except jinja2.exceptions.TemplateError as e:
            got = f"<error: {e}>"
        if got != exp:
            bad.append(f"case {i + 1}: jinja2 {got!r} vs expected {exp!r}")
    t.check(f"chat-{name}: Python Jinja2 (HF's engine) renders all {len(reqs)} cases like the expected prompts",
            len(reqs) == len(want) and not bad, "; ".join(bad)[:1500])
sys.exit(1 if t.FAILS else 0)
