#!/usr/bin/env bash
# Emulated Raspberry Pi check: Debian 12 "bookworm" arm64 (what Raspberry Pi OS 64-bit is built on, Python 3.11)
# under qemu-user, with the aarch64 wheels a Pi would install. Compares with this machine's results:
# int8 top-1 predictions identical, float32 top-1 identical and probabilities close. Non-zero exit otherwise.
#
#   bash tests/pi/check.sh            (needs root for apt-get/debootstrap; downloads go to build/pi, never the repo)
#
# Two CPU profiles, each with the CPU model qemu emulates and the /proc/cpuinfo a real board shows:
#   pi4: Cortex-A72 (ARMv8.0)   pi5: Cortex-A76 (ARMv8.2, dot product)
# Why the profiles matter: ai-edge-litert 2.x initialises the cpuinfo library at Interpreter(); under plain
# qemu-user it reads the x86 host's /proc/cpuinfo, finds no ARM cores and dereferences NULL (the segfault seen
# with 2.3.0; 1.2.0 did not touch cpuinfo there). And qemu's default "max" CPU offers ISA extensions no Pi has,
# on which 2.3.0's int8 kernels computed wrong results under qemu 7.2. A real Pi has neither problem.
# LITERT_VERSION (default 2.3.0, what pip installs on a Pi today) picks the runtime to check.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
B=${PI_BUILD:-$REPO/build/pi}
ROOT=$B/bookworm-arm64
SITE=$B/site-litert  # the edge extra: numpy 2, ai-edge-litert
SITE_TFLITE=$B/site-tflite  # the edge-tflite extra: numpy<2, tflite-runtime 2.14 (cp311 aarch64, manylinux_2_34)
LITERT_VERSION=${LITERT_VERSION:-2.3.0}
mkdir -p "$B"

need() { command -v "$1" >/dev/null || { echo "pi-check: installing $2"; apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need debootstrap debootstrap
need qemu-aarch64-static qemu-user-static

if [ ! -x "$ROOT/usr/bin/python3.11" ]; then
  echo "pi-check: debootstrap (first, foreign stage) of bookworm arm64 into $ROOT"
  rm -rf "$ROOT"
  debootstrap --foreign --arch=arm64 --variant=minbase --include=python3 bookworm "$ROOT" http://deb.debian.org/debian >"$B/debootstrap.log" 2>&1 \
    || { echo "pi-check: debootstrap failed, see $B/debootstrap.log"; exit 2; }
  # The foreign stage unpacks only the essential packages; python3 and its libraries wait for the second stage,
  # which needs the target CPU. Unpacking their downloaded .debs is enough to run python3 under qemu-user.
  for deb in "$ROOT"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done
fi
PI_PY=(qemu-aarch64-static -L "$ROOT" "$ROOT/usr/bin/python3.11")
"${PI_PY[@]}" -c 'import platform, sys; print("pi-check: emulated", platform.machine(), "Python", sys.version.split()[0])'

# The x86 side: a venv with the edge extra, built from this checkout.
X86=$B/x86-venv
if [ ! -x "$X86/bin/emnist-edge" ]; then
  python3 -m venv "$X86"
  "$X86/bin/pip" install -q "$REPO[edge]"
fi
PY=$X86/bin/python

platforms=(--platform manylinux2014_aarch64)
for v in 17 24 26 27 28 31 34 35 36; do platforms+=(--platform "manylinux_2_${v}_aarch64"); done  # bookworm: glibc 2.36
pi_install() {  # $1 target folder, then requirements: aarch64 cp311 wheels, as pip on a Pi would pick
  local target=$1; shift
  rm -rf "$target"
  "$PY" -m pip install -q --target "$target" "${platforms[@]}" --python-version 3.11 --implementation cp \
      --only-binary=:all: "$B"/wheel/emnist_edge-*.whl "$@"
}
if [ ! -f "$SITE/.litert-$LITERT_VERSION" ] || [ ! -f "$SITE_TFLITE/.done" ]; then
  echo "pi-check: aarch64 wheels: edge extra (ai-edge-litert $LITERT_VERSION) and edge-tflite extra"
  rm -rf "$B/wheel"
  "$PY" -m pip wheel -q --no-deps -w "$B/wheel" "$REPO" >/dev/null
  rm -rf "$REPO/build/lib" "$REPO/build/bdist."*  # setuptools' leftovers
  pi_install "$SITE" numpy pillow "ai-edge-litert==$LITERT_VERSION" && touch "$SITE/.litert-$LITERT_VERSION"
  pi_install "$SITE_TFLITE" "numpy<2" pillow "tflite-runtime==2.14.0" && touch "$SITE_TFLITE/.done"
fi

"$PY" tests/pi/compare.py reference "$B/x86.json" "$B/inputs.npz"

cpuinfo() {  # $1: pi4 or pi5 -> the /proc/cpuinfo of that board, read by the runtime through qemu's -L prefix
  local part feat model variant
  if [ "$1" = pi4 ]; then part=0xd08; variant=0x0; feat="fp asimd evtstrm crc32 cpuid"; model="Raspberry Pi 4 Model B"
  else part=0xd0b; variant=0x4; model="Raspberry Pi 5 Model B"
       feat="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"; fi
  mkdir -p "$ROOT/proc"
  for i in 0 1 2 3; do
    printf 'processor\t: %s\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: 1\n\n' \
      "$i" "$feat" "$variant" "$part"
  done > "$ROOT/proc/cpuinfo"
  printf 'Model\t\t: %s\n' "$model" >> "$ROOT/proc/cpuinfo"
}

status=0
for profile in pi4:cortex-a72 pi5:cortex-a76; do
  board=${profile%%:*}; export QEMU_CPU=${profile##*:}
  cpuinfo "$board"
  for site in "$SITE" "$SITE_TFLITE"; do
    runtime=ai-edge-litert; [ "$site" = "$SITE_TFLITE" ] && runtime=tflite-runtime
    echo "pi-check: === $board ($QEMU_CPU), $runtime ==="
    export PYTHONPATH="$site"
    "${PI_PY[@]}" -m emnist_edge.edge.cli info --runtime $runtime | grep -E "^(mode|runtime|runtime_version) "
    "${PI_PY[@]}" -m emnist_edge.edge.cli predict --runtime $runtime "$REPO"/examples/*.png
    "${PI_PY[@]}" "$REPO/tests/pi/compare.py" run "$B/$board-$runtime.json" "$B/inputs.npz"
    unset PYTHONPATH
    "$PY" tests/pi/compare.py compare "$B/x86.json" "$B/$board-$runtime.json" || status=1
  done
done
[ $status = 0 ] && echo "pi-check: PASS" || echo "pi-check: FAIL"
exit $status
