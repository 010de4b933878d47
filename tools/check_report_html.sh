#!/usr/bin/env bash
# Renders a report in headless Chromium: index.html and every page under categories/ (or the
# compare.html that `anoflow compare --out DIR` writes).
# Each page must load with no console error and no script error, every image (charts and
# panels) must load, and every chart must be drawn at a non-trivial size (300x200 px or
# more). Screenshots of the main page and of the first category page are saved, and the main
# page's must not be blank.
#
# Usage: tools/check_report_html.sh REPORT_DIR|COMPARE_DIR [SCREENSHOT_DIR]
#   SCREENSHOT_DIR (default: screenshots/ in the run directory, REPORT_DIR's parent) gets
#   index.png and category.png; for a compare directory, compare.png in it.
# Needs Chromium (Debian package `chromium`; installed with apt-get when missing and root) and python3.
set -euo pipefail

dir=${1:?usage: $0 REPORT_DIR [SCREENSHOT_DIR]}
main=index.html
[[ -f "$dir/$main" ]] || main=compare.html
[[ -f "$dir/$main" ]] || { echo "no index.html or compare.html in $dir" >&2; exit 2; }
dir=$(cd "$dir" && pwd)
if [[ $main == index.html ]]; then
  shots=${2:-$(dirname "$dir")/screenshots}
  shot="$shots/index.png"
else
  shots=${2:-$dir}
  shot="$shots/compare.png"
fi
mkdir -p "$shots"
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
probes=()
cleanup() { rm -rf "$profile"; rm -f "${probes[@]}"; }
trap cleanup EXIT
run_browser() {
  timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars --window-size=1400,2400 "$@"
}

# The probe: a copy of the page (beside it, so relative links resolve) with a script that
# records errors and, once everything has loaded, writes what it found into the DOM.
probe_script='<script>
window.__bad = [];
addEventListener("error", function (e) {
  var t = e.target;
  window.__bad.push(t && t.getAttribute ? "failed to load " + (t.getAttribute("src") || t.tagName) : "script error: " + e.message);
}, true);
var __ce = console.error;
console.error = function () { window.__bad.push("console error: " + Array.prototype.join.call(arguments, " ")); __ce.apply(console, arguments); };
addEventListener("load", function () {
  var bad = window.__bad.slice(), charts = document.querySelectorAll("img.chart");
  Array.prototype.forEach.call(document.images, function (i) {
    if (!i.complete || i.naturalWidth === 0) bad.push("image not rendered: " + i.getAttribute("src"));
  });
  Array.prototype.forEach.call(charts, function (c) {
    var r = c.getBoundingClientRect();
    if (r.width < 300 || r.height < 200) bad.push("chart too small: " + c.getAttribute("src") + " " + r.width + "x" + r.height);
  });
  var p = document.createElement("pre");
  p.textContent = "ANOFLOW-" + "CHECK images=" + document.images.length + " charts=" + charts.length + " problems=" + bad.length + "\n" + bad.join("\n") + "\nANOFLOW-" + "END";
  document.body.appendChild(p);
});
</script>'
failed=0
pages=("$dir/$main")
for p in "$dir"/categories/*.html; do [[ -f "$p" ]] && pages+=("$p"); done
for page in "${pages[@]}"; do
  probe="$(dirname "$page")/.check-$(basename "$page")"
  probes+=("$probe")
  python3 -c 'import sys; h = open(sys.argv[1]).read(); open(sys.argv[2], "w").write(h.replace("<head>", "<head>" + sys.argv[3], 1))' \
    "$page" "$probe" "$probe_script"
  dom=$(run_browser --virtual-time-budget=15000 --dump-dom "file://$probe" 2>/dev/null || true)
  result=$(printf '%s\n' "$dom" | sed -n '/<pre>ANOFLOW-CHECK/,/ANOFLOW-END/p' | grep -v 'ANOFLOW-END' || true)
  name=${page#"$dir"/}
  if [[ -z "$result" ]]; then
    echo "FAIL: $name: the page did not finish loading in Chromium"; failed=1; continue
  fi
  summary=$(printf '%s\n' "$result" | head -1 | sed 's/.*ANOFLOW-CHECK //')
  if [[ "$summary" != *" problems=0" || "$summary" == *" charts=0 "* ]]; then
    echo "FAIL: $name: $summary"; printf '%s\n' "$result" | tail -n +2 | sed 's/^/  /'; failed=1
  else
    echo "ok: $name: $summary"
  fi
done
[[ $failed -eq 0 ]] || exit 1

run_browser --screenshot="$shot" "file://$dir/$main" >/dev/null 2>&1 || true
[[ -s "$shot" ]] || { echo "FAIL: Chromium wrote no screenshot of $dir/$main" >&2; exit 1; }
if [[ ${#pages[@]} -gt 1 ]]; then
  run_browser --screenshot="$shots/category.png" "file://${pages[1]}" >/dev/null 2>&1 || true
  [[ -s "$shots/category.png" ]] || { echo "FAIL: Chromium wrote no screenshot of ${pages[1]}" >&2; exit 1; }
fi
echo "screenshots in $shots"
[[ $main == index.html ]] || exit 0

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
print("OK: the report renders")
PY
