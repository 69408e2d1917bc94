#!/usr/bin/env bash
# The device script's two halves (bench/device.ts measures; this packs and unpacks what it needs).
#
#   bash bench/device.sh prepare        # here, once: Deno, the npm cache and the Vulkan loader into
#                                       # .gpu/ and .gl/ (git-ignored; make them travel with the tree)
#   bash bench/device.sh run [ARGS...]  # on the GPU machine (no network, no Deno): unpacks them and
#                                       # runs bench/device.ts --out "$OUT/device.json" ARGS...
#
# Both steps follow ../shared/docs/device.md (the recipe that worked on an H200).
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  prepare)
    for p in /.gpu/ /.gl/; do grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude; done
    mkdir -p .gpu .gl
    deno_bin="$(command -v deno)"
    echo "packing $deno_bin ($(deno --version | head -1)) into .gpu/deno.xz"
    xz -T2 -c "$deno_bin" > .gpu/deno.xz.tmp && mv .gpu/deno.xz.tmp .gpu/deno.xz
    # Only the packages the engine imports (deno.json's other imports, the OpenAI client and
    # puppeteer for tests, are ~90 MB and would not fit what travels with the tree).
    echo "caching the npm dependencies of bench/device.ts into .gpu/deno_dir"
    deno eval 'const d = JSON.parse(Deno.readTextFileSync("deno.json"));
      const imports = Object.fromEntries(Object.entries(d.imports).filter(([k]) => k.startsWith("@huggingface/")));
      Deno.writeTextFileSync(".gpu/deno.json", JSON.stringify({ imports }, null, 2) + "\n");'
    rm -rf .gpu/deno_dir
    DENO_DIR="$PWD/.gpu/deno_dir" deno cache --config .gpu/deno.json --no-lock bench/device.ts
    echo "downloading the Vulkan loader and GL libraries into .gl/"
    (cd .gl && apt-get download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
    du -sh .gpu .gl
    ;;
  run)
    shift
    # DEVICE_UNPACK=1 takes the offline path even where Deno is installed (to test it here).
    if [ -n "${DEVICE_UNPACK:-}" ] || ! command -v deno >/dev/null; then
      [ -f .gpu/deno.xz ] || { echo "no deno and no .gpu/deno.xz: run 'bash bench/device.sh prepare' where Deno is" >&2; exit 2; }
      for f in .gl/*.deb; do dpkg -x "$f" /; done
      ldconfig
      xz -dc .gpu/deno.xz > /tmp/deno && chmod +x /tmp/deno
      DENO=/tmp/deno
    else
      DENO=deno
    fi
    export DENO_DIR="$PWD/.gpu/deno_dir" DENO_WEBGPU_BACKEND=vulkan
    out="${OUT:-.}/device.json"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || true
    "$DENO" run -A --cached-only --config .gpu/deno.json --no-lock bench/device.ts --out "$out" "$@"
    ;;
  *)
    echo "usage: bash bench/device.sh prepare | run [bench/device.ts options]" >&2
    exit 2
    ;;
esac
