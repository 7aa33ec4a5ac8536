#!/usr/bin/env python3
"""Makes tokenizer test cases: strings and the ids HF `tokenizers` gives them with the GPT-NeoX-20B
tokenizer.json (../shared/data.md). Run where `tokenizers` is installed (the GPU machine):

    python3 tools/make_tokenizer_cases.py data/20B_tokenizer.json tests/data/tokenizer/neox_cases.json

The strings are fixed hand-written cases plus generated ones (seeded), so the output is reproducible.
"""
import json
import random
import sys

from tokenizers import Tokenizer

HAND = [
    "", " ", "  ", "\n", "\t", "\r\n", "Hello World!", "The quick brown fox jumps over the lazy dog.",
    "hello world", " hello", "  hello", "   hello   world   ", "a\tb\t\tc", "line1\r\nline2\r\n",
    "line1\n\nline2\n\n\n", "trailing spaces    ", "    leading spaces", "\n\n\n\n", "\t\t\t",
    "1234567890", "3.14159 2.71828", "$1,000,000.00", "phone: +1 (555) 123-4567", "0x1F 0b1010 1e-9",
    "I'm you're he's we'll they'd it's", "DON'T SHOUT'S", "don’t (curly)", "rock 'n' roll",
    "café naïve résumé", "Cafe\u0301 (combining acute)", "e\u0301\u0301", "Å vs A\u030a", "ﬁ ligature",
    "Ελληνικά", "Русский текст", "עברית", "العربية", "हिन्दी", "ไทย", "한국어 텍스트", "日本語のテキスト",
    "中文文本测试", "混合 mixed 文本 text", "emoji 😀😃😄😁", "👨‍👩‍👧‍👦 family", "flags 🇺🇸🇬🇧", "✓ ✗ ★ ☆ ♥",
    "<|endoftext|>", "before<|endoftext|>after", "a <|endoftext|> b", "<|endoftext|><|endoftext|>",
    "<|padding|>", "x<|padding|>y", "<|endoftext", "|endoftext|>", "Tab\tin\tmiddle", "mixed \t \n whitespace",
    "code: def f(x):\n    return x * 2\n", "    indented\n        more\n            deeper",
    "JSON {\"a\": [1, 2, 3], \"b\": null}", "<html><body>Hi</body></html>", "https://example.com/a?b=c&d=e",
    "user@example.com", "C++ and C# and F#", "naïve​zero​width", "non\u00a0breaking\u00a0space",
    "\u3000ideographic space", "soft\u00adhyphen", "\u200b\u200c\u200d", "\ufeffBOM", "NUL\u0000byte",
    "bell\u0007char", "é" * 20, "a" * 100, " " * 17 + "x", "ab" * 50, "Mr. Smith's 2nd-floor office.",
    "We the People of the United States, in Order to form a more perfect Union,",
    "Fellow-Citizens of the Senate and House of Representatives:",
    "ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏ", "ĀāĂăĄą", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math", "𝟘𝟙𝟚", "½ ¼ ¾ ² ³", "™ © ®", "— – - ‐",
    "«quotes» „German“ ‚single‘", "…ellipsis…", "   \n   \n", " \r \r\n \n ", "a\rb\rc",
]

WORDS = ["the", "of", "Congress", "nation", "people", "war", "peace", "economy", "1861", "2021",
         "États", "Übermensch", "日本", "😀", "can't", "I'd", "'s", "  ", "\t", "\n", "\r\n", "...", "!?",
         "<|endoftext|>", "1,234", "42", "3.5%", "x", "Z", "ñ", "ß", "Ω", "—", "中文", "한", "α", "β"]


def generated(n, seed=1234):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(1, 25)
        parts = []
        for _ in range(k):
            w = rng.choice(WORDS)
            sep = rng.choice([" ", " ", " ", "", "  ", "   ", "\t", "\n", " \n", "\r\n", "    "])
            parts.append(w + sep)
        out.append("".join(parts))
    for _ in range(n // 2):  # random code points from several scripts
        k = rng.randint(1, 30)
        s = "".join(chr(rng.choice([rng.randint(32, 126), rng.randint(0xA0, 0x24F), rng.randint(0x370, 0x3FF),
                                    rng.randint(0x400, 0x4FF), rng.randint(0x4E00, 0x4FFF),
                                    rng.randint(0x1F600, 0x1F64F), rng.randint(0x3040, 0x30FF), 32, 10, 9]))
                    for _ in range(k))
        out.append(s)
    return out


def main():
    tok = Tokenizer.from_file(sys.argv[1])
    texts = HAND + generated(120)
    cases = []
    for t in texts:
        ids = tok.encode(t, add_special_tokens=False).ids
        dec = tok.decode(ids, skip_special_tokens=False)
        cases.append({"text": t, "ids": ids, "decoded": dec})
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump({"tokenizer": "GPT-NeoX-20B (rwkv-tokenizer-node@1.0.5 20B_tokenizer.json)",
                   "made_with": "tokenizers " + __import__("tokenizers").__version__,
                   "cases": cases}, f, ensure_ascii=False, indent=0)
    print(f"{len(cases)} cases written to {sys.argv[2]}")


if __name__ == "__main__":
    main()
