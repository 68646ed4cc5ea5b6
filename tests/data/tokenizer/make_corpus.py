#!/usr/bin/python3
"""Writes corpus.jsonl: the tokenizer conformance corpus, one JSON string per
line. Deterministic (no randomness), so rerunning it reproduces the committed
file. Categories: prose in many scripts, code, CJK, emoji (ZWJ, skin tones,
flags, keycaps), combining marks (NFC vs NFD), whitespace runs, numbers,
URLs, special tokens embedded in text, empty and one-character strings, and
regex corner cases (contractions, Unicode spaces, BOM, long words)."""
import json
import os

prose = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How are you doing today?",
    "It's a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
    "Le cœur a ses raisons que la raison ne connaît point.",
    "Über allen Gipfeln ist Ruh, in allen Wipfeln spürest du kaum einen Hauch.",
    "¿Dónde está la biblioteca? ¡No lo sé!",
    "Ó meu coração, não há açúcar na maçã.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
    "العربية لغة جميلة، وهي لغة القرآن الكريم.",
    "עברית היא שפה שמית ממשפחת השפות האפרו-אסייתיות.",
    "हिन्दी भारत की राजभाषा है और यह देवनागरी लिपि में लिखी जाती है।",
    "বাংলা ভাষা দক্ষিণ এশিয়ার একটি ইন্দো-আর্য ভাষা।",
    "தமிழ் மொழி உலகின் மிகப் பழமையான மொழிகளில் ஒன்றாகும்.",
    "ภาษาไทยเป็นภาษาที่มีวรรณยุกต์",
    "ქართული ენა ქართველურ ენათა ოჯახს მიეკუთვნება.",
    "Հայերենը հնդեվրոպական լեզվաընտանիքի առանձին ճյուղ է։",
    "한국어는 한글로 적습니다. 안녕하세요!",
    "日本語の文章には、ひらがな、カタカナ、漢字が使われます。",
    "中文是世界上使用人数最多的语言之一。",
    "繁體中文與簡體中文的差異在於字形。",
    "Tiếng Việt có sáu thanh điệu: ngang, huyền, sắc, hỏi, ngã, nặng.",
    "Türkçe'de İstanbul ve ılık kelimelerinde noktalı ve noktasız i vardır.",
    "አማርኛ የኢትዮጵያ የሥራ ቋንቋ ነው።",
    "ភាសាខ្មែរ គឺជាភាសាផ្លូវការរបស់ប្រទេសកម្ពុជា។",
    "བོད་ཡིག་ནི་བོད་པའི་ཡི་གེ་ཡིན།",
    "Монгол хэл нь Монгол улсын албан ёсны хэл юм.",
    "Kiswahili ni lugha ya Kibantu inayozungumzwa Afrika Mashariki.",
    "Þetta er íslenska, með ð og þ.",
    "Polski: zażółć gęślą jaźń.",
    "Čeština: Příliš žluťoučký kůň úpěl ďábelské ódy.",
    "Українська мова: Чуєш їх, доцю, га? Кумедна ж ти, прощайся без ґольфів!",
    "ᐃᓄᒃᑎᑐᑦ ᑎᑎᕋᐅᓯᖅ",
    "ꦧꦱꦗꦮ Javanese script",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𝒶𝓁𝓅𝒽𝒶𝒷𝑒𝓉𝓈",
    "Egyptian hieroglyphs: 𓀀𓀁𓂀 and CJK extension B: 𠀀𠀁𪚥",
]

code = [
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "const x = (a, b) => a ?? b; // nullish\nconsole.log(`${x}`);",
    "fn main() { let v: Vec<u32> = (0..10).collect(); println!(\"{:?}\", v); }",
    "{\"name\": \"kvfabric\", \"version\": [1, 2, 3], \"ok\": true, \"nested\": {\"k\": null}}",
    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: test\n  labels:\n    app: web\n",
    "#!/bin/bash\nset -euo pipefail\nfor f in *.txt; do echo \"$f\"; done\n",
    "<html><head><title>Test</title></head><body><p class=\"x\">Hi &amp; bye</p></body></html>",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC;",
    "^(?:[a-z0-9!#$%&'*+/=?^_`{|}~-]+)@(?:[a-z0-9-]+\\.)+[a-z]{2,}$",
    "    if (x != NULL && x->next) {\n        x = x->next;\n    }",
    "x += 1; y -= 2; z *= 3; w /= 4; q %= 5; r **= 6; s //= 7",
    "import numpy as np\narr = np.zeros((3, 4), dtype=np.float32)\n",
    "    \n\t\n  \t  def indented():\n\t\tpass\n",
    "// TODO(kvf): handle EAGAIN\nwhile ((n = read(fd, buf, sizeof buf)) > 0) {}",
    "a==b!=c<=d>=e->f::g<<h>>i&&j||k",
    "0x1F, 0b1010, 0o777, 1_000_000, 3.14e-10, .5, 5.",
    "#include <stdio.h>\n#define MAX(a,b) ((a)>(b)?(a):(b))",
]

cjk = [
    "我爱你", "東京都", "ありがとうございます", "カタカナとひらがな", "한국어 문장입니다",
    "中華人民共和國", "你好，世界！", "「引用」と『二重引用』", "１２３４５６７８９０", "ＡＢＣ ａｂｃ",
    "人工智能和机器学习正在改变世界。", "漢字仮名交じり文", "龍の子太郎",
]

emoji = [
    "🙂", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸🇯🇵🇫🇷", "1️⃣2️⃣#️⃣", "❤️‍🔥", "🧑🏿‍💻",
    "I ❤️ NY 🗽!", "🤷‍♂️🤷‍♀️", "👩🏻‍🤝‍👩🏾", "Emoji at end 😀", "😀😃😄😁😆😅😂🤣",
    "🫠🫡🫢", "🐈‍⬛ black cat", "✌︎ text presentation ✌️ emoji",
]

combining = [
    "e\u0301", "cafe\u0301", "cafés", "n\u0303o", "\u1100\u1161\u11a8", "A\u030a", "Å",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA\u036b\u0357\u0334\u0362\u0335\u031c\u0330\u0354L\u0368\u0367\u0369\u0358\u0320G\u0311\u0357\u030e\u0305\u031b\u0341\u0334\u033b\u0348\u034d\u0354\u0339O\u0342\u030c\u030c\u0358\u0328\u0335\u0339\u033b\u031d\u0333",
    "o\u0308\u0304", "\u0915\u094d\u0937", "s\u0323\u0307", "Ω \u2126 \u03a9", "ﬁ ﬂ ﬀ",
    "\u212b ångström", "a\u0300\u0301\u0302", "\u0627\u0644\u0652\u0639\u064e\u0631\u064e\u0628\u0650\u064a\u0651\u064e\u0629",
]

whitespace = [
    " ", "  ", "   leading", "trailing   ", "a  b   c    d", "\t", "\t\ttabs\tinside",
    "\n", "\n\n\n", "line1\nline2\r\nline3\rline4", "  \n  \n", "x \n y", "end with space ",
    "\u00a0nbsp\u00a0here", "ideographic\u3000space", "em\u2003space and thin\u2009space",
    "line\u2028separator", "para\u2029separator", "next\u0085line", "zero\u200bwidth",
    "\ufeffBOM at start", "word\ufeff", "a \ufeff b", "soft\u00adhyphen", "\r\n\r\n",
    " \t \n \r ", "word\u000bvtab\u000cff", "    ", "\u2000\u2001\u2002\u2003", "x\u3000\u3000y",
    "a\u0085\u0085 b", "\u200b\u200c\u200d", "tab\t\t\tthen text", "  multiple   spaces   between   words  ",
]

numbers = [
    "0", "7", "42", "123", "1234", "12345678901234567890", "3.14159265358979",
    "-273.15", "1e10", "6.022e23", "1,000,000", "99.9%", "$1,234.56", "€50", "¥1000",
    "٠١٢٣٤٥٦٧٨٩", "۱۲۳", "१२३४", "Ⅻ ⅻ ⅰⅱⅲ", "½ ¾ ⅓", "²³¹", "2024-01-15T12:34:56Z",
    "+1 (555) 123-4567", "192.168.0.1:8080", "v1.2.3-rc.4", "0.000001", "1/2/3/4",
    "12:30pm", "I have 3 apples and 12 oranges.", "Pi is 3.14, e is 2.718.",
]

urls = [
    "https://example.com/path/to/page?query=1&x=y#frag",
    "http://localhost:8080/v1/chat/completions",
    "Visit https://en.wikipedia.org/wiki/Byte_pair_encoding for details.",
    "mailto:someone@example.org",
    "user.name+tag@sub.domain.co.uk",
    "ftp://files.example.net/pub/file.tar.gz",
    "https://例え.jp/パス?q=検索",
    "/usr/local/lib/libkvf_tokenizer.a",
    "C:\\Users\\Name\\Documents\\file.txt",
    "git@github.com:org/repo.git",
    "s3://bucket/key/with spaces/and%20encoding",
]

special_tokens = [
    "<s>", "</s>", "<unk>", "<s>Hello</s>", "Hello <s> world </s>", " <s> ",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>",
    "<|endoftext|>", "text<|endoftext|>more", "<|im_start|>", "<|im_end|>",
    "<|im_st", "<|im_start", "<s", "s>", "<<s>>", "<|eot_id|><|eot_id|>",
    "<|reserved_special_token_5|>", "<think>\nreasoning\n</think>\n\nanswer",
    "<tool_call>\n{\"name\": \"f\"}\n</tool_call>", "<|vision_start|><|image_pad|><|vision_end|>",
    "a<s>b</s>c", "\n<s>\n", "<|im_end|>\n<|im_start|>", "[INST] Hi [/INST]",
    "<<SYS>>\nsystem\n<</SYS>>", "<|fim_prefix|>code<|fim_suffix|>", "<|START|>", "<|box_start|>(1,2)<|box_end|>",
]

short = ["", "a", "Z", "é", "中", "🙂", "'", "\"", "\\", "-", ".", "?", "!", "é", "ß", "ẞ", "Σ", "ς",
         "\u0000", "\u007f", "\u0001", "\u001f", "\ue000", "\uffff", "\U0010ffff", "ſ", "İ", "ı", "K",
         "ǅ", "Ⓐ", "_", "~", "`", "@", "#", "0", "9"]

contractions = [
    "I'm", "don't", "WE'LL", "she'S", "'s", "'t", "they're", "we've", "I'd", "you'll", "it's",
    "can't won't shouldn't", "O'Reilly's", "'quoted'", "rock 'n' roll", "I'ſ", "IT'S", "'re'",
    "L'ÉTÉ", "l'été", "’s curly", "it’s",
]

long_strings = [
    "a" * 300,
    "abc" * 100,
    "!" * 50,
    "." * 40 + " " + "-" * 40,
    " " * 100,
    "\n" * 30,
    "ab " * 80,
    "🙂" * 40,
    "中" * 60,
    "1234567890" * 10,
    "The quick brown fox. " * 12,
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. " * 3,
]

mixed = [
    "English, 中文, 日本語, 한국어, العربية, русский — all in one line.",
    "Price: $5.99 (≈ €5.50) — 50% off!!!",
    "→ ← ↑ ↓ ⇒ ⇐ ∀ ∃ ∅ ∈ ∉ ∑ ∏ √ ∞ ≈ ≠ ≤ ≥",
    "math: x² + y² = z², ∫₀¹ f(x) dx, α β γ δ",
    "Quotes: “double” ‘single’ «guillemets» „German“",
    "dash – en — em ‒ figure ― bar",
    "ellipsis… and bullet • and middot ·",
    "©®™ §¶ †‡ ‰ ′″",
    "Box: ┌─┐│└─┘ ░▒▓█",
    "Braille ⠓⠑⠇⠇⠕",
    "Mixed RTL: hello שלום world عالم!",
    "CamelCaseIdentifierWithNumbers123AndMore",
    "snake_case_variable_name = another_one",
    "kebab-case-slug-here",
    "UPPERCASE SHOUTING TEXT!!!",
    "MiXeD cAsE wItH sPaCeS",
    "tab\tseparated\tvalues\t1\t2\t3",
    "csv,values,\"quoted, with comma\",123",
    "Ünïcödé ñ ç ø å æ œ",
    "Hello\u200dWorld",
    "🙂 smile 😀 grin 😁 beam",
    "naïve coöperate résumé",
    "español: ¿qué tal? — ¡muy bien!",
    "1. First\n2. Second\n3. Third",
    "- item\n  - nested\n    - deeper",
    "> quote\n>> nested quote",
    "**bold** _italic_ `code` ~~strike~~",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "$$E = mc^2$$ and \\(a^2 + b^2\\)",
    "\\begin{equation} \\sum_{i=0}^{n} i \\end{equation}",
    "Emoji🙂inside中文text",
    "a1b2c3d4",
    "test@123#456$789",
    "((((nested))))",
    "[[[]]]{{{}}}",
    "'''triple''' \"\"\"quotes\"\"\"",
    "Ends with newline\n",
    "\nStarts with newline",
    "Ends with CRLF\r\n",
    " leading space only",
    "Multiple\n\n\nnewlines\n\n\n",
    "Hello world",
    " Hello world",
    "Hello  world",
    "hello WORLD",
]

# Where JavaScript's regex semantics differ from oniguruma's (HF): \s in
# JS includes U+FEFF and excludes U+0085; (?i:'s) in oniguruma also matches
# the long s (U+017F) and the Kelvin sign.
regex_corners = [
    "a \ufeff\ufeff  b", "x\u0085\u0085  y", "\u0085\u0085\n", "end\u0085", "\ufeff\ufeff",
    " \ufeff ", "word \u0085 word", "tab\t\ufeff\tx", "I'\u017f ok", "it'\u017f", "HE'\u212a",
    "\u00a0\u00a0 x", "\u2028\u2028 y", "a\u3000\u3000 \u3000b", "\u180e mongolian vowel separator",
]

def main():
    items = []
    for group in (prose, code, cjk, emoji, combining, whitespace, numbers, urls, special_tokens,
                  short, contractions, long_strings, mixed, regex_corners):
        items.extend(group)
    # prose again with a leading space and a trailing newline (BPE edge positions)
    items.extend(" " + p for p in prose[:20])
    items.extend(p + "\n" for p in prose[:10])
    seen = set()
    out = []
    for s in items:
        if s in seen:
            continue
        seen.add(s)
        out.append(s)
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "corpus.jsonl"), "w", encoding="utf-8") as f:
        for s in out:
            f.write(json.dumps(s, ensure_ascii=True) + "\n")
    print(f"corpus.jsonl: {len(out)} strings")

if __name__ == "__main__":
    main()
