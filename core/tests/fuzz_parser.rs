//! Bounded fuzzing of the pipeline parser (`yaml::parse`, `spec::parse`, `--set` overrides).
//!
//! Seeded, deterministic generators in plain Rust, so CI runs the same inputs every time and a
//! failure names the seed and the input. Three kinds of input:
//! - mutations of real pipeline text (the files in `pipelines/`, the YAML blocks of the docs,
//!   and the pipelines of the unit and end-to-end tests, copied below);
//! - YAML-ish documents generated from a small grammar (block and flow style, anchors, aliases,
//!   vars, env references, sweeps);
//! - random bytes (decoded lossily, since the parser takes text).
//!
//! Properties: nothing panics; every error has a non-empty message, names the file, and a
//! position (when there is one) is 1-based; a document that parses parses the same way twice.
//! `ANOFLOW_FUZZ_SCALE=N` multiplies the number of cases (default 1, a few seconds).

use std::{
    collections::BTreeMap,
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anoflow_core::{
    spec::{self, Override},
    yaml,
};

// ---- a tiny seeded generator (SplitMix64): no dependency, same stream everywhere ----

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn scale() -> usize {
    std::env::var("ANOFLOW_FUZZ_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1)
}

// ---- seed corpus ----

const SEEDS: &[&str] = &[
    // core/src/spec.rs unit tests
    "name: t
vars: { root: \"${ROOT}\", category: bottle, k: 3 }
nodes:
  data: { plugin: mvtec-ad, with: { root: \"{{root}}/x\", category: \"{{category}}\" } }
  thr: { plugin: threshold-mean-std, fit: validation, with: { k: \"{{k}}\" }, inputs: { score: data.image } }
  eval: { plugin: segmentation-metrics, inputs: { masks: [thr.mask, data.mask] } }
",
    "name: t\nnodez: {}\nnodes:\n  a: { plugn: x }\n  b: { plugin: y, inputs: { i: nodot } }\n  c: { plugin: z, with: { p: \"{{nope}}\" } }\n",
    "nodes:\n  a: { plugin: x, with: { p: \"${NOPE:-d}/x\" } }\n",
    "x: &v { a: 1 }\ny: *v\n",
    // tests/validation.rs
    "name: v
nodes:
  data: { plugin: synthetic, with: { seed: 1 } }
  grad: { plugin: gradient-magnitude, with: { scale: 2.0 }, inputs: { image: data.image } }
  thr:  { plugin: threshold-mean-std, fit: validation, with: { k: 3 }, inputs: { score: grad.score } }
  eval: { plugin: segmentation-metrics, inputs: { gt: data.mask, masks: [thr.mask], scores: [grad.score] } }
",
    "name: c
nodes:
  data: { plugin: synthetic }
  grad: { plugin: gradient-magnitude, inputs: { image: data.image } }
  b1: { plugin: gaussian-blur, inputs: { score: b3.score } }
  b2: { plugin: gaussian-blur, inputs: { score: b1.score } }
  b3: { plugin: gaussian-blur, inputs: { score: b2.score } }
",
    // docs/DESIGN sketch, block style, with a sweep
    "name: patchcore-ttt4as
vars: { root: \"${MVTEC_ROOT:-/data/mvtec}\", category: bottle }
nodes:
  data:
    plugin: mvtec-ad
    with:
      root: \"{{root}}\"
      category: \"{{category}}\"
      validation_fraction: 0.2
  backbone:
    plugin: onnx-features
    with: { model: models/wide_resnet50.onnx, layers: [layer2, layer3] }
    inputs: { image: data.image }
  scorer: { plugin: patchcore, fit: train, with: { coreset: 0.1 }, inputs: { features: backbone.features } }
  thr: { plugin: threshold-mean-std, fit: validation, with: { k: 3 }, inputs: { score: scorer.score } }
  ttt:
    plugin: ttt4as
    cache: false
    doc: the paper's setting
    with: { percentile: 99, nominal_samples: 500, classifier: { kind: linear-svm, c: 0.001 } }
    inputs:
      score: scorer.score
      features:
        - backbone.features
  eval: { plugin: segmentation-metrics, inputs: { gt: data.mask, masks: [thr.mask, ttt.mask] } }
sweep:
  ttt.percentile: [97, 98, 99]
  vars.category: [bottle, cable]
",
];

/// Real pipeline text: the seeds above, every `pipelines/*.yaml`, and the ```yaml blocks of
/// the docs (so the corpus grows with the project).
fn corpus() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out: Vec<String> = SEEDS.iter().map(|s| s.to_string()).collect();
    if let Ok(rd) = std::fs::read_dir(root.join("pipelines")) {
        let mut files: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "yaml" || e == "yml")) {
            if let Ok(t) = std::fs::read_to_string(f) {
                out.push(t);
            }
        }
    }
    let mut docs: Vec<PathBuf> = vec![root.join("README.md")];
    if let Ok(rd) = std::fs::read_dir(root.join("docs")) {
        docs.extend(rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "md")));
    }
    docs.sort();
    for d in docs {
        let Ok(text) = std::fs::read_to_string(&d) else { continue };
        let mut block: Option<String> = None;
        for line in text.lines() {
            match (&mut block, line.trim_start()) {
                (None, l) if l.starts_with("```yaml") || l.starts_with("```yml") => block = Some(String::new()),
                (Some(_), l) if l.starts_with("```") => out.extend(block.take()),
                (Some(b), _) => {
                    b.push_str(line);
                    b.push('\n');
                }
                _ => {}
            }
        }
    }
    out
}

// ---- mutations and generators ----

/// Fragments that matter to a YAML scanner or to the pipeline schema.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ": ",
    ",",
    "- ",
    "-",
    "?",
    "? ",
    "#",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "!",
    "!!str ",
    "!!map ",
    "|",
    ">",
    "|-",
    "'",
    "\"",
    "\\",
    "\\u",
    "\t",
    "\n",
    "\r\n",
    "  ",
    "    ",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "%TAG ! x\n",
    "{{",
    "}}",
    "{{root}}",
    "{{ k }}",
    "${",
    "${ROOT}",
    "${NOPE}",
    "${X:-",
    ":-",
    "nodes:",
    "plugin: ",
    "inputs: ",
    "with: ",
    "fit: ",
    "sweep:",
    "vars:",
    "cache: ",
    "data.image",
    "a.b.c",
    ".",
    "null",
    "~",
    "true",
    "0x1F",
    "1e999",
    "-.inf",
    ".nan",
    "9999999999999999999999",
    "é",
    "\u{feff}",
    "\u{0}",
    "\u{2028}",
    "🦀",
    "<<: *a",
];

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(6) {
        let len = bytes.len();
        let at = rng.below(len + 1);
        match rng.below(9) {
            0 if len > 0 => bytes[at.min(len - 1)] ^= 1 << rng.below(8),
            1 => bytes.splice(at..at, rng.pick(TOKENS).bytes()).for_each(drop),
            2 if len > 0 => {
                let end = (at + 1 + rng.below(16)).min(len);
                bytes.drain(at.min(end)..end);
            }
            3 if len > 0 => {
                // Duplicate a span: repeated keys, nodes and brackets.
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                let span = bytes[start..end].to_vec();
                bytes.splice(at..at, span).for_each(drop);
            }
            4 => bytes.truncate(at),
            5 => {
                // Swap two lines (breaks indentation and ordering).
                let mut lines: Vec<&str> = text.lines().collect();
                if lines.len() > 1 {
                    let (i, j) = (rng.below(lines.len()), rng.below(lines.len()));
                    lines.swap(i, j);
                    bytes = lines.join("\n").into_bytes();
                }
            }
            6 => {
                // Re-indent a line by a random amount.
                let pad = " ".repeat(rng.below(7));
                bytes.splice(at..at, pad.bytes()).for_each(drop);
            }
            7 => bytes.insert(at, rng.next() as u8),
            _ => bytes.splice(at..at, rng.pick(TOKENS).bytes().chain(rng.pick(TOKENS).bytes())).for_each(drop),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

const KEYS: &[&str] = &[
    "name",
    "description",
    "vars",
    "nodes",
    "sweep",
    "plugin",
    "fit",
    "with",
    "inputs",
    "cache",
    "doc",
    "data",
    "grad",
    "thr",
    "eval",
    "k",
    "seed",
    "root",
    "masks",
    "score",
    "image",
    "gt",
    "",
    "a b",
    "1",
    "-",
    "vars.root",
    "thr.k",
];
const SCALARS: &[&str] = &[
    "synthetic",
    "data.image",
    "grad.score",
    "validation",
    "train",
    "3",
    "-1",
    "2.5",
    "1e400",
    "true",
    "null",
    "~",
    "\"{{root}}\"",
    "\"${ROOT}\"",
    "\"${NOPE}\"",
    "'{{k}}'",
    "\"{{\"",
    "\"${\"",
    "\"a\\u00e9\"",
    "'it''s'",
    "x.y.z",
    "*a",
    "[]",
    "{}",
    "\"\"",
    ".inf",
    "0o17",
    "é",
];

/// A random document: half the time a pipeline-shaped one (top-level keys and node keys of
/// the schema, random values), else a YAML-ish mapping from the grammar below.
fn gen_doc(rng: &mut Rng) -> String {
    let mut out = String::new();
    if rng.chance(50) {
        gen_block_map(rng, &mut out, 0, 0);
        return out;
    }
    out.push_str("name: g\n");
    if rng.chance(50) {
        out.push_str("vars: { root: \"${ROOT}\", k: 3, s: \"{{root}}/x\" }\n");
    }
    out.push_str("nodes:\n");
    for n in 0..1 + rng.below(5) {
        out.push_str(&format!(
            "  n{n}:\n    plugin: {}\n",
            rng.pick(&["synthetic", "gaussian-blur", "x", "synthetic", "gaussian-blur", "{{k}}"])
        ));
        if rng.chance(40) {
            out.push_str(&format!(
                "    fit: {}\n",
                rng.pick(&["train", "validation", "train", "validation", "[a]", "{{s}}"])
            ));
        }
        if rng.chance(15) {
            out.push_str("    with:\n");
            gen_block_map(rng, &mut out, 6, 3);
        } else if rng.chance(70) {
            // Mostly well-formed params, so the checks past YAML are reached.
            let params: Vec<String> = (0..rng.below(4))
                .map(|i| {
                    format!("p{i}: {}", rng.pick(&["1", "2.5", "true", "x", "[1, 2]", "{ a: b }", "\"{{k}}\"", "~"]))
                })
                .collect();
            out.push_str(&format!("    with: {{ {} }}\n", params.join(", ")));
        }
        if rng.chance(15) {
            out.push_str(&format!("    inputs: {{ {}: ", rng.pick(&["image", "score", "masks"])));
            gen_flow(rng, &mut out, 4);
            out.push_str(" }\n");
        } else if rng.chance(60) {
            let edges: Vec<String> =
                (0..1 + rng.below(3)).map(|i| format!("n{i}.{}", rng.pick(&["image", "score", "mask"]))).collect();
            out.push_str(&format!(
                "    inputs: {{ {}: [{}] }}\n",
                rng.pick(&["image", "score", "masks"]),
                edges.join(", ")
            ));
        }
        if rng.chance(20) {
            out.push_str(&format!("    cache: {}\n", rng.pick(&["true", "no", "1"])));
        }
    }
    if rng.chance(20) {
        out.push_str("sweep:\n  n0.k: ");
        gen_flow(rng, &mut out, 4);
        out.push('\n');
    }
    out
}

fn gen_key(rng: &mut Rng) -> String {
    let k = rng.pick(KEYS);
    if rng.chance(10) {
        format!("&a {k}")
    } else {
        k.to_string()
    }
}

fn gen_block_map(rng: &mut Rng, out: &mut String, indent: usize, depth: usize) {
    for _ in 0..1 + rng.below(5) {
        out.push_str(&" ".repeat(indent));
        out.push_str(&gen_key(rng));
        out.push(':');
        match rng.below(if depth > 4 { 2 } else { 5 }) {
            0 | 1 => {
                out.push(' ');
                gen_flow(rng, out, depth + 1);
                out.push('\n');
            }
            2 => {
                out.push('\n');
                gen_block_map(rng, out, indent + 2, depth + 1);
            }
            3 => {
                out.push('\n');
                for _ in 0..1 + rng.below(3) {
                    out.push_str(&" ".repeat(indent + 2));
                    out.push_str("- ");
                    gen_flow(rng, out, depth + 1);
                    out.push('\n');
                }
            }
            _ => {
                out.push_str(if rng.chance(50) { " &a" } else { " &b" });
                out.push('\n');
                gen_block_map(rng, out, indent + 2, depth + 1);
            }
        }
    }
}

fn gen_flow(rng: &mut Rng, out: &mut String, depth: usize) {
    match rng.below(if depth > 5 { 1 } else { 4 }) {
        0 | 1 => out.push_str(rng.pick::<&str>(SCALARS)),
        2 => {
            out.push('[');
            for i in 0..rng.below(4) {
                if i > 0 {
                    out.push_str(", ");
                }
                gen_flow(rng, out, depth + 1);
            }
            out.push(']');
        }
        _ => {
            out.push('{');
            for i in 0..rng.below(4) {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(rng.pick::<&str>(KEYS));
                out.push_str(": ");
                gen_flow(rng, out, depth + 1);
            }
            out.push('}');
        }
    }
}

fn random_bytes(rng: &mut Rng) -> String {
    let n = rng.below(300);
    let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

// ---- the properties ----

fn env() -> BTreeMap<String, String> {
    BTreeMap::from([("ROOT".to_string(), "/data".to_string()), ("X".to_string(), "x".to_string())])
}

/// Checks one input; returns a description of what went wrong, if anything.
fn check_one(text: &str, overrides: &[Override]) -> (Option<String>, bool) {
    let file = Path::new("fuzz/p.yaml");
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut problems = Vec::new();
        let mut accepted = false;
        match yaml::parse(text) {
            Err(e) => {
                if e.message.trim().is_empty() {
                    problems.push(format!("YAML error without a message at {:?}", e.pos));
                }
                if e.pos.line == 0 || e.pos.col == 0 {
                    problems.push(format!("YAML error position is not 1-based: {:?} ({})", e.pos, e.message));
                }
            }
            Ok(Some(node)) => {
                let _ = node.to_json();
            }
            Ok(None) => {}
        }
        let first = spec::parse(file, text, overrides, &env());
        match &first {
            Err(d) => {
                let items = d.clone().into_vec();
                if items.is_empty() {
                    problems.push("spec::parse failed with no diagnostic".to_string());
                }
                for diag in items {
                    let shown = diag.to_string();
                    if diag.message.trim().is_empty() {
                        problems.push(format!("diagnostic without a message: {shown}"));
                    }
                    if !shown.starts_with("fuzz/p.yaml") {
                        problems.push(format!("diagnostic does not name the file: {shown}"));
                    }
                    if diag.pos.is_some_and(|p| p.line == 0 || p.col == 0) {
                        problems.push(format!("diagnostic position is not 1-based: {shown}"));
                    }
                }
            }
            Ok(_) if text.contains('\0') => problems.push("a text with a NUL was accepted".to_string()),
            Ok(s) => {
                accepted = true;
                let json = s.to_json();
                // Parsing is a function of the text: a second parse agrees.
                match spec::parse(file, text, overrides, &env()) {
                    Ok(again) if again.to_json() == json => {}
                    _ => problems.push("a second parse of the same text differs".to_string()),
                }
            }
        }
        (problems, accepted)
    }));
    match result {
        Ok((problems, accepted)) if problems.is_empty() => (None, accepted),
        Ok((problems, accepted)) => (Some(problems.join("; ")), accepted),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            (Some(format!("PANIC: {msg}")), false)
        }
    }
}

struct Tally {
    target: &'static str,
    cases: usize,
    /// Inputs that parsed into a pipeline (the rest were refused with diagnostics).
    accepted: usize,
    failures: Vec<String>,
    started: Instant,
}

impl Tally {
    fn new(target: &'static str) -> Self {
        Self { target, cases: 0, accepted: 0, failures: Vec::new(), started: Instant::now() }
    }

    fn run(&mut self, seed: u64, text: &str, overrides: &[Override]) {
        self.cases += 1;
        let (problem, accepted) = check_one(text, overrides);
        self.accepted += usize::from(accepted);
        if let Some(problem) = problem {
            if self.failures.len() < 5 {
                self.failures.push(format!("seed {seed}: {problem}\n--- input ({} bytes) ---\n{text:?}", text.len()));
            } else {
                self.failures.push(String::new());
            }
        }
    }

    fn finish(self) {
        // The count is what docs/RELIABILITY.md records.
        eprintln!(
            "{}: {} cases ({} accepted) in {:.1?}",
            self.target,
            self.cases,
            self.accepted,
            self.started.elapsed()
        );
        let n = self.failures.len();
        assert!(n == 0, "{}: {n} failing inputs; first ones:\n{}", self.target, self.failures.join("\n\n"));
    }
}

/// Quiet the default panic printer while a target runs (panics are caught and reported).
fn quiet_panics<T>(f: impl FnOnce() -> T) -> T {
    let old = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let out = f();
    std::panic::set_hook(old);
    out
}

#[test]
fn mutated_real_pipelines_never_panic() {
    let corpus = corpus();
    assert!(corpus.len() >= SEEDS.len(), "the seed corpus is missing");
    // Every seed is itself well-formed YAML (a mutation of junk proves little).
    for (i, text) in corpus.iter().enumerate() {
        assert!(yaml::parse(text).is_ok(), "corpus entry {i} is not valid YAML:\n{text}");
    }
    let mut t = Tally::new("parser/mutated");
    quiet_panics(|| {
        for seed in 0..(20_000 * scale()) as u64 {
            let mut rng = Rng(seed);
            let base = rng.pick(&corpus).clone();
            let text = mutate(&mut rng, &base);
            t.run(seed, &text, &[]);
        }
    });
    // Many mutations must still be pipelines, or the checks past YAML are never reached.
    assert!(t.accepted * 20 > t.cases, "only {} of {} mutated inputs parsed", t.accepted, t.cases);
    t.finish();
}

#[test]
fn generated_documents_never_panic() {
    let mut t = Tally::new("parser/generated");
    quiet_panics(|| {
        for seed in 0..(10_000 * scale()) as u64 {
            let mut rng = Rng(seed ^ 0xdead_beef);
            let text = gen_doc(&mut rng);
            t.run(seed, &text, &[]);
        }
    });
    assert!(t.accepted * 20 > t.cases, "only {} of {} generated inputs parsed", t.accepted, t.cases);
    t.finish();
}

#[test]
fn random_bytes_never_panic() {
    let mut t = Tally::new("parser/random-bytes");
    quiet_panics(|| {
        for seed in 0..(20_000 * scale()) as u64 {
            let mut rng = Rng(seed.wrapping_mul(31) ^ 0x5eed);
            let text = random_bytes(&mut rng);
            t.run(seed, &text, &[]);
        }
    });
    t.finish();
}

#[test]
fn random_overrides_never_panic() {
    let corpus = corpus();
    let mut t = Tally::new("parser/overrides");
    let mut parsed = 0;
    quiet_panics(|| {
        for seed in 0..(5000 * scale()) as u64 {
            let mut rng = Rng(seed ^ 0x05e7);
            // `--set PATH=VALUE` text, then the file with whatever overrides parsed.
            let path = [*rng.pick(KEYS), *rng.pick(KEYS), *rng.pick(KEYS)][..1 + rng.below(3)].join(".");
            let value = if rng.chance(50) { rng.pick(SCALARS).to_string() } else { mutate(&mut rng, rng_scalar(seed)) };
            let arg = format!("{path}={value}");
            let parsed_override = catch_unwind(AssertUnwindSafe(|| arg.parse::<Override>()));
            let Ok(o) = parsed_override else {
                t.cases += 1;
                t.failures.push(format!("seed {seed}: PANIC parsing --set {arg:?}"));
                continue;
            };
            let overrides: Vec<Override> = o.into_iter().collect();
            parsed += overrides.len();
            let base = rng.pick(&corpus).clone();
            t.run(seed, &base, &overrides);
        }
    });
    assert!(parsed > 100, "too few overrides parsed ({parsed}): the generator is off");
    t.finish();
}

fn rng_scalar(seed: u64) -> &'static str {
    SCALARS[(seed as usize) % SCALARS.len()]
}

/// The 1-based line and column (in characters) of byte `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

/// Input classes a hostile file carries (issue 15), on random corpus entries:
/// - a NUL anywhere is an error at exactly its position (it used to cut the file there, so
///   a pipeline silently lost the nodes after it);
/// - a leading UTF-8 byte-order mark changes nothing;
/// - a second document after `---` is an error at the `---` (it used to be ignored).
#[test]
fn nul_bom_and_second_documents_everywhere() {
    let corpus = corpus();
    let mut t = Tally::new("parser/nul-bom-documents");
    quiet_panics(|| {
        for seed in 0..(2000 * scale()) as u64 {
            let mut rng = Rng(seed ^ 0x0b0b);
            let i = rng.below(corpus.len());
            let text = &corpus[i];
            t.cases += 3;
            let mut fail = |what: String| t.failures.push(format!("seed {seed}, corpus entry {i}: {what}"));
            let clean = spec::parse(Path::new("p.yaml"), text, &[], &env()).map(|s| s.to_json()).map_err(|d| d.len());

            // A NUL at a random character boundary.
            let boundaries: Vec<usize> = text.char_indices().map(|(b, _)| b).chain([text.len()]).collect();
            let at = boundaries[rng.below(boundaries.len())];
            let with_nul = format!("{}\0{}", &text[..at], &text[at..]);
            let (line, col) = line_col(&with_nul, at);
            match catch_unwind(AssertUnwindSafe(|| yaml::parse(&with_nul))) {
                Ok(Err(e)) if e.message.contains("NUL") && (e.pos.line, e.pos.col) == (line, col) => {}
                other => fail(format!("NUL at {line}:{col}: {other:?}")),
            }
            if spec::parse(Path::new("p.yaml"), &with_nul, &[], &env()).is_ok() {
                fail(format!("a pipeline with a NUL at {line}:{col} was accepted"));
            }

            // A byte-order mark in front.
            let with_bom = format!("\u{feff}{text}");
            let bom =
                spec::parse(Path::new("p.yaml"), &with_bom, &[], &env()).map(|s| s.to_json()).map_err(|d| d.len());
            if bom != clean {
                fail("a leading BOM changed the result".to_string());
            }

            // Another corpus entry as a second document.
            let other = rng.pick(&corpus);
            let first = if text.ends_with('\n') { text.clone() } else { format!("{text}\n") };
            let joined = format!("{first}---\n{other}");
            let dash_line = line_col(&joined, first.len()).0;
            match yaml::parse(&joined) {
                Err(e) if e.message.contains("second YAML document") && e.pos.line == dash_line => {}
                Err(e) if e.message.contains("second YAML document") => {
                    fail(format!("second document reported at line {}, it starts at {dash_line}", e.pos.line))
                }
                other => fail(format!("a second document at line {dash_line} gave {other:?}")),
            }
        }
    });
    t.finish();
}

/// "Billion laughs": aliases that expand exponentially must fail fast with a message, not
/// exhaust memory or hang.
#[test]
fn alias_bombs_are_refused_quickly() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    text.push_str("nodes: { d: { plugin: synthetic, with: { v: *a11 } } }\n");
    let started = Instant::now();
    let result = spec::parse(Path::new("bomb.yaml"), &text, &[], &env());
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let errs = result.expect_err("a 10^12-node document must be refused").into_vec();
    assert!(errs[0].to_string().starts_with("bomb.yaml:"), "{}", errs[0]);
    assert!(errs[0].message.contains("alias"), "{}", errs[0]);
}

/// Deep nesting must be an error or a result, not a stack overflow.
#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    for (open, close) in [("[", "]"), ("{a: ", "}"), ("- ", "")] {
        let depth = 100_000;
        let text = if close.is_empty() {
            (0..2000).map(|i| format!("{}- x\n", "  ".repeat(i))).collect::<String>()
        } else {
            format!("nodes: {}1{}\n", open.repeat(depth), close.repeat(depth))
        };
        // Run on a small stack, as a worker thread would have.
        let handle = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || spec::parse(Path::new("deep.yaml"), &text, &[], &env()).map(|_| ()).map_err(|d| d.len()))
            .unwrap();
        let outcome = handle.join();
        assert!(outcome.is_ok(), "parsing {open}...{close} nested panicked or overflowed");
    }
}
