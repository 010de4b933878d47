#!/usr/bin/env bash
# Renders a report's index.html in headless Chromium and checks the screenshot is not blank
# (its linked PNGs loaded: many colours, a good share of non-white pixels).
#
# Usage: tools/check_report_html.sh REPORT_DIR [SCREENSHOT.png]
# Needs Chromium (Debian package `chromium`; installed with apt-get when missing and root) and python3.
set -euo pipefail

dir=${1:?usage: $0 REPORT_DIR [SCREENSHOT.png]}
shot=${2:-$(mktemp -d)/report.png}
[[ -f "$dir/index.html" ]] || { echo "no index.html in $dir" >&2; exit 2; }

browser=""
for b in chromium chromium-browser google-chrome; do
  if command -v "$b" >/dev/null 2>&1; then browser=$b; break; fi
done
if [[ -z "$browser" ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium with apt-get" >&2
    apt-get install -y chromium >/dev/null || { apt-get update >/dev/null && apt-get install -y chromium >/dev/null; }
    browser=chromium
  else
    echo "Chromium not found: install the Debian package \`chromium\`" >&2
    exit 2
  fi
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
url="file://$(cd "$dir" && pwd)/index.html"
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size=1400,2400 \
  --screenshot="$shot" "$url" >/dev/null 2>&1 || true
[[ -s "$shot" ]] || { echo "FAIL: Chromium wrote no screenshot of $url" >&2; exit 1; }

# Decode the PNG with the standard library only, then measure it.
python3 - "$shot" <<'PY'
import struct, sys, zlib

path = sys.argv[1]
data = open(path, "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, width = 8, b"", 0
while pos < len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + length]
    if kind == b"IHDR":
        width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
        assert depth == 8 and ctype in (2, 6), f"unsupported PNG (depth {depth}, colour type {ctype})"
        bpp = 3 if ctype == 2 else 4
    elif kind == b"IDAT":
        idat += body
    pos += 12 + length
raw = zlib.decompress(idat)
stride = width * bpp
prev = bytearray(stride)
colours, non_white, total = set(), 0, 0
for y in range(height):
    f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    prev = line
    if y % 2 == 0:  # every other row is plenty
        for x in range(0, width, 2):
            px = tuple(line[x * bpp:x * bpp + 3])
            colours.add(px)
            non_white += px != (255, 255, 255)
            total += 1
share = non_white / total
print(f"screenshot {path}: {width}x{height}, {len(colours)} colours, {share:.1%} non-white pixels")
if len(colours) < 50 or share < 0.05:
    print("FAIL: the rendered report looks blank (its images did not load?)")
    sys.exit(1)
print("OK: index.html renders")
PY
