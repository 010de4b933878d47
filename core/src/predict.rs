//! `anoflow predict`: a bundle's pipeline on new images, through the executor's predictor.
//!
//! Inputs are files, directories (every PNG or TIFF below, recursively) or glob patterns.
//! An image's id is its path below the directory (or pattern root) it was found in, without
//! the extension (a file named alone: its stem); its category is `--category`, the bundle's
//! only category, or else the first directory of that relative path. For each image predict
//! writes `<out>/<id>.mask.png` (0/255, at the image's own size), with `--scores`
//! `<out>/<id>.score.png`, and one JSON line (stdout and `<out>/predictions.jsonl`). A bad
//! image gives an error line and the others go on; a failed write stops with the path.

use std::{
    collections::HashSet,
    io::Write,
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anoflow_imaging::paths::{is_image_file, match_path};
use anoflow_sdk::value::{PortValue, SampleMeta, Value, LABEL_UNKNOWN};
use serde_json::{json, Value as Json};

use crate::{
    bundle::{Bundle, Geometry, OutputRef},
    executor::{NodeStats, Predictor, INTERRUPTED},
    fsutil::write_atomic,
};

/// Why predict stopped.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("{0}")]
    Setup(String),
    #[error("cannot write {path}: {source} (nothing partial was left there)")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Run(#[from] crate::executor::RunError),
}

pub struct PredictOptions {
    pub inputs: Vec<String>,
    pub out: PathBuf,
    pub category: Option<String>,
    pub scores: bool,
    pub in_flight: usize,
    pub watch: bool,
    pub poll: Duration,
    /// Print each JSON line on stdout too.
    pub echo: bool,
}

/// One image to predict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputImage {
    pub path: PathBuf,
    /// Below the directory or pattern root it was found in, `/`-separated, extension kept.
    pub rel: String,
}

impl InputImage {
    /// The id: `rel` without its extension.
    pub fn id(&self) -> String {
        match self.rel.rfind('.') {
            Some(dot) if !self.rel[dot..].contains('/') => self.rel[..dot].to_string(),
            _ => self.rel.clone(),
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn rel_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap_or(file);
    rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/")
}

/// The images the inputs name, sorted within each input; an input naming nothing is an error.
pub fn list_inputs(inputs: &[String]) -> Result<Vec<InputImage>, PredictError> {
    let mut out = Vec::new();
    for input in inputs {
        let found = list_input(input)?;
        if found.is_empty() && !input.contains(['*', '?']) {
            return Err(PredictError::Setup(format!("input {input}: no PNG or TIFF image there")));
        }
        out.extend(found);
    }
    Ok(out)
}

fn list_input(input: &str) -> Result<Vec<InputImage>, PredictError> {
    let path = Path::new(input);
    if input.contains(['*', '?']) {
        let comps: Vec<&str> = input.split('/').collect();
        let first_wild = comps.iter().position(|c| c.contains(['*', '?'])).unwrap_or(comps.len());
        let root_text = comps[..first_wild].join("/");
        let root = PathBuf::from(if root_text.is_empty() && input.starts_with('/') {
            "/".into()
        } else if root_text.is_empty() {
            ".".into()
        } else {
            root_text
        });
        if !root.is_dir() {
            return Err(PredictError::Setup(format!("input {input}: {} is not a directory", root.display())));
        }
        let mut files = Vec::new();
        walk(&root, &mut files);
        files.sort();
        let pattern = &comps[first_wild..];
        return Ok(files
            .into_iter()
            .filter(|f| {
                let rel = rel_of(&root, f);
                let parts: Vec<&str> = rel.split('/').collect();
                is_image_file(f) && match_path(pattern, &parts)
            })
            .map(|f| InputImage { rel: rel_of(&root, &f), path: f })
            .collect());
    }
    if path.is_dir() {
        let mut files = Vec::new();
        walk(path, &mut files);
        files.retain(|f| is_image_file(f));
        files.sort();
        return Ok(files.into_iter().map(|f| InputImage { rel: rel_of(path, &f), path: f }).collect());
    }
    if path.exists() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        return Ok(vec![InputImage { path: path.to_path_buf(), rel: name }]);
    }
    Err(PredictError::Setup(format!("input {input}: no such file or directory")))
}

/// The category of an image: the flag, the bundle's only one, or the first directory of its
/// relative path when that is one of the bundle's.
pub fn category_of(image: &InputImage, flag: Option<&str>, categories: &[String]) -> Result<String, String> {
    if let Some(c) = flag {
        return Ok(c.to_string());
    }
    match categories {
        [] => Ok("input".into()),
        [only] => Ok(only.clone()),
        _ => {
            let first = image.rel.split('/').next().filter(|_| image.rel.contains('/')).unwrap_or_default();
            if categories.iter().any(|c| c == first) {
                Ok(first.to_string())
            } else {
                Err(format!(
                    "no category: pass --category or put the image in a directory named after one of: {}",
                    categories.join(", ")
                ))
            }
        }
    }
}

/// Where a pipeline-size map lands in the original `h x w` image: the canvas of the resized
/// image, the crop's place in it, and whether that fits the map's size.
fn placement(
    geometry: Option<Geometry>,
    h: usize,
    w: usize,
    mh: usize,
    mw: usize,
) -> Option<((usize, usize), (usize, usize))> {
    let g = geometry?;
    let resized = if g.resize > 0 { anoflow_imaging::shorter_side_size(h, w, g.resize) } else { (h, w) };
    let (top, left) = if g.crop > 0 {
        anoflow_imaging::center_crop_offsets(resized.0, resized.1, g.crop, g.crop).ok()?
    } else {
        (0, 0)
    };
    let window = if g.crop > 0 { (g.crop, g.crop) } else { resized };
    (window == (mh, mw)).then_some((resized, (top, left)))
}

/// A pipeline-size map brought back to the original `h x w`: put into the resized image's
/// canvas at the crop's place (`fill` outside it), then resized (nearest) to `h x w`. Without
/// a known geometry, resized directly.
pub fn to_original<T: Copy>(
    data: &[T],
    mh: usize,
    mw: usize,
    h: usize,
    w: usize,
    geometry: Option<Geometry>,
    fill: T,
) -> Vec<T> {
    let (canvas, ch, cw) = match placement(geometry, h, w, mh, mw) {
        Some(((rh, rw), (top, left))) => {
            let mut canvas = vec![fill; rh * rw];
            for y in 0..mh {
                canvas[(top + y) * rw + left..(top + y) * rw + left + mw].copy_from_slice(&data[y * mw..(y + 1) * mw]);
            }
            (canvas, rh, rw)
        }
        None => (data.to_vec(), mh, mw),
    };
    if (ch, cw) == (h, w) {
        return canvas;
    }
    anoflow_imaging::resize_nearest(&canvas, ch, cw, 1, h, w).unwrap_or(canvas)
}

/// One 8-connected component of a mask.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Component {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
    pub area: usize,
}

/// The 8-connected components of a 0/1 mask, in scan order of their first pixel.
pub fn components(mask: &[u8], h: usize, w: usize) -> Vec<Component> {
    let mut seen = vec![false; mask.len()];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if mask[start] == 0 || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut x0, mut y0, mut x1, mut y1, mut area) = (w, h, 0, 0, 0);
        while let Some(i) = stack.pop() {
            let (y, x) = (i / w, i % w);
            (x0, y0, x1, y1, area) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y), area + 1);
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (ny, nx) = (y as i64 + dy, x as i64 + dx);
                    if ny < 0 || nx < 0 || ny >= h as i64 || nx >= w as i64 {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if mask[j] != 0 && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        out.push(Component { x: x0, y: y0, width: x1 - x0 + 1, height: y1 - y0 + 1, area });
    }
    out
}

/// Appends one line to a file; a failed write is rolled back so the file never holds part
/// of a line.
fn append_line(path: &Path, line: &str) -> Result<(), PredictError> {
    let fail = |source| PredictError::Write { path: path.to_path_buf(), source };
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(fail)?;
    let before = file.metadata().map_err(fail)?.len();
    let written = file.write_all(format!("{line}\n").as_bytes()).and_then(|()| file.flush());
    if let Err(e) = written {
        let _ = file.set_len(before);
        return Err(fail(e));
    }
    Ok(())
}

fn write_png(path: &Path, h: usize, w: usize, data: &[u8]) -> Result<(), PredictError> {
    let bytes = anoflow_imaging::encode_png(h, w, 1, data)
        .map_err(|e| PredictError::Write { path: path.to_path_buf(), source: std::io::Error::other(e.to_string()) })?;
    write_atomic(path, &bytes).map_err(|source| PredictError::Write { path: path.to_path_buf(), source })
}

/// Throughput of a predict session.
#[derive(Debug, Default, serde::Serialize)]
pub struct Throughput {
    pub images: usize,
    pub errors: usize,
    pub seconds: f64,
    pub images_per_second: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    /// Per node: samples and milliseconds per sample inside the stage.
    pub stages: Vec<Json>,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((q * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

/// The session: the predictor, where results go, and what was measured.
struct Session<'a> {
    bundle: &'a Bundle,
    predictor: &'a Predictor<'a>,
    opts: &'a PredictOptions,
    outputs: Vec<usize>,
    latencies: Vec<f64>,
    errors: usize,
    lines: PathBuf,
}

fn port_value<'v>(
    values: &'v [Vec<PortValue>],
    outputs: &[usize],
    p: &crate::check::CheckedPipeline,
    o: &OutputRef,
) -> Option<&'v Value> {
    let n = p.index_of(&o.node)?;
    let k = outputs.iter().position(|&x| x == n)?;
    values[k].iter().find(|v| v.port == o.port.as_str()).map(|v| &v.value)
}

impl Session<'_> {
    fn emit(&mut self, line: Json) -> Result<(), PredictError> {
        let text = line.to_string();
        append_line(&self.lines, &text)?;
        if self.opts.echo {
            println!("{text}");
        }
        Ok(())
    }

    fn error_line(&mut self, image: &InputImage, message: String) -> Result<(), PredictError> {
        self.errors += 1;
        eprintln!("error: {}: {message}", image.path.display());
        self.emit(json!({"image": image.path, "id": image.id(), "error": message}))
    }

    fn run_batch(&mut self, batch: &[InputImage]) -> Result<(), PredictError> {
        let manifest = &self.bundle.manifest;
        let mut metas = Vec::new();
        let mut accepted = Vec::new();
        for image in batch {
            let t0 = Instant::now();
            let decoded = match anoflow_imaging::read_image(&image.path) {
                Ok(img) => img,
                Err(e) => {
                    self.error_line(image, format!("unreadable image: {e}"))?;
                    continue;
                }
            };
            if let Some(expected) = manifest.input.channels {
                if decoded.channels() != expected {
                    let message = format!(
                        "{} channel(s), the bundle's pipeline was fitted on {expected}-channel images",
                        decoded.channels()
                    );
                    self.error_line(image, message)?;
                    continue;
                }
            }
            let category = match category_of(image, self.opts.category.as_deref(), &manifest.categories) {
                Ok(c) => c,
                Err(message) => {
                    self.error_line(image, message)?;
                    continue;
                }
            };
            let mut meta = SampleMeta::new(image.id(), category, "test");
            meta.label = LABEL_UNKNOWN;
            meta.path = std::path::absolute(&image.path)
                .unwrap_or_else(|_| image.path.clone())
                .to_string_lossy()
                .as_ref()
                .into();
            meta.index = metas.len() as u64;
            metas.push(meta);
            accepted.push((image, (decoded.height(), decoded.width()), t0.elapsed()));
        }
        if metas.is_empty() {
            return Ok(());
        }
        let t = Instant::now();
        let results = self.predictor.predict(&metas)?;
        let pipeline = t.elapsed();
        for ((image, (h, w), decode), (meta, result)) in accepted.into_iter().zip(metas.iter().zip(results)) {
            let t_write = Instant::now();
            let values = match result {
                Ok(values) => values,
                Err(message) => {
                    self.error_line(image, message)?;
                    continue;
                }
            };
            let p = &self.bundle.pipeline;
            let Some(Value::Mask(mask)) = port_value(&values, &self.outputs, p, &manifest.outputs.mask) else {
                self.error_line(image, format!("`{}` gave no mask", manifest.outputs.mask))?;
                continue;
            };
            let geometry = manifest.input.geometry;
            let full = to_original(mask.data(), mask.height(), mask.width(), h, w, geometry, 0u8);
            let id = meta.id.to_string();
            let mask_path = self.opts.out.join(format!("{id}.mask.png"));
            write_png(&mask_path, h, w, &full.iter().map(|&v| v * 255).collect::<Vec<u8>>())?;
            let comps = components(&full, h, w);
            let area: usize = comps.iter().map(|c| c.area).sum();
            let mut line = json!({
                "image": image.path,
                "id": id,
                "category": meta.category.as_str(),
                "height": h,
                "width": w,
                "anomalous": area > 0,
                "mask_area": area,
                "mask": mask_path,
                "components": comps,
            });
            if let Some(Value::Scalar(s)) =
                manifest.outputs.image_score.as_ref().and_then(|o| port_value(&values, &self.outputs, p, o))
            {
                line["image_score"] = json!(s);
            }
            if self.opts.scores {
                if let Some(Value::ScoreMap(map)) =
                    manifest.outputs.score.as_ref().and_then(|o| port_value(&values, &self.outputs, p, o))
                {
                    let (lo, hi) = map.data().iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                    let full = to_original(map.data(), map.height(), map.width(), h, w, geometry, lo);
                    let span = (hi - lo).max(f32::MIN_POSITIVE);
                    let bytes: Vec<u8> =
                        full.iter().map(|&v| (255.0 * (v - lo) / span).round().clamp(0.0, 255.0) as u8).collect();
                    let path = self.opts.out.join(format!("{id}.score.png"));
                    write_png(&path, h, w, &bytes)?;
                    line["score_map"] = json!({"file": path, "min": lo, "max": hi});
                }
            }
            let write = t_write.elapsed();
            let total = decode + pipeline + write;
            line["timings_ms"] = json!({
                "decode": ms(decode),
                "pipeline": ms(pipeline),
                "batch": metas.len(),
                "write": ms(write),
                "total": ms(total),
            });
            self.latencies.push(ms(total));
            self.emit(line)?;
        }
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// The nodes whose outputs predict serves, in the order a [`Predictor`] must be given them.
pub fn output_nodes(bundle: &Bundle) -> Vec<usize> {
    let o = &bundle.manifest.outputs;
    let nodes: std::collections::BTreeSet<usize> = [Some(&o.mask), o.score.as_ref(), o.image_score.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|o| bundle.pipeline.index_of(&o.node))
        .collect();
    nodes.into_iter().collect()
}

/// Predicts every input image (and, with `watch`, every new one until interrupted); returns
/// the throughput, also written to `<out>/throughput.json`.
pub fn run(bundle: &Bundle, predictor: &Predictor<'_>, opts: &PredictOptions) -> Result<Throughput, PredictError> {
    std::fs::create_dir_all(&opts.out).map_err(|source| PredictError::Write { path: opts.out.clone(), source })?;
    if let Some(c) = &opts.category {
        if !bundle.manifest.categories.is_empty() && !bundle.manifest.categories.contains(c) {
            return Err(PredictError::Setup(format!(
                "--category {c}: the bundle has {}",
                bundle.manifest.categories.join(", ")
            )));
        }
    }
    let outputs = output_nodes(bundle);
    let mut session = Session {
        bundle,
        predictor,
        opts,
        outputs,
        latencies: Vec::new(),
        errors: 0,
        lines: opts.out.join("predictions.jsonl"),
    };
    let started = Instant::now();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    // Watch mode: a file is taken once its size held still over one poll (a copy in progress
    // is left for the next round).
    let mut sizes: std::collections::HashMap<PathBuf, u64> = std::collections::HashMap::new();
    let mut first = true;
    // Outputs written below an input directory are not inputs.
    let out_dir = std::fs::canonicalize(&opts.out).unwrap_or_else(|_| opts.out.clone());
    loop {
        let listed = if first {
            list_inputs(&opts.inputs)?
        } else {
            opts.inputs.iter().flat_map(|i| list_input(i).unwrap_or_default()).collect()
        };
        let mut fresh = Vec::new();
        for image in listed {
            if seen.contains(&image.path) || std::fs::canonicalize(&image.path).is_ok_and(|p| p.starts_with(&out_dir)) {
                continue;
            }
            if opts.watch && !first {
                let size = std::fs::metadata(&image.path).map(|m| m.len()).unwrap_or(0);
                if sizes.insert(image.path.clone(), size) != Some(size) {
                    continue;
                }
                sizes.remove(&image.path);
            }
            seen.insert(image.path.clone());
            fresh.push(image);
        }
        first = false;
        for batch in fresh.chunks(opts.in_flight.max(1)) {
            if INTERRUPTED.load(Ordering::SeqCst) {
                break;
            }
            session.run_batch(batch)?;
        }
        if !opts.watch || INTERRUPTED.load(Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(opts.poll);
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut sorted = session.latencies.clone();
    sorted.sort_by(f64::total_cmp);
    let stages = predictor
        .stats()
        .into_iter()
        .filter(|s: &NodeStats| s.samples > 0)
        .map(|s| {
            json!({"node": s.id, "stage": s.stage, "samples": s.samples,
                   "ms_per_sample": ms(Duration::from_secs_f64(s.busy_seconds / s.samples as f64))})
        })
        .collect();
    let throughput = Throughput {
        images: session.latencies.len(),
        errors: session.errors,
        seconds,
        images_per_second: if seconds > 0.0 { session.latencies.len() as f64 / seconds } else { 0.0 },
        latency_p50_ms: percentile(&sorted, 0.5),
        latency_p99_ms: percentile(&sorted, 0.99),
        stages,
    };
    let path = opts.out.join("throughput.json");
    let text = serde_json::to_string_pretty(&throughput).unwrap_or_default();
    write_atomic(&path, text.as_bytes()).map_err(|source| PredictError::Write { path, source })?;
    Ok(throughput)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_8_connected_with_boxes_and_areas() {
        #[rustfmt::skip]
        let m = [
            1, 0, 0, 0, 1,
            0, 1, 0, 0, 1,
            0, 0, 0, 0, 0,
            0, 0, 1, 1, 0,
        ];
        let c = components(&m, 4, 5);
        assert_eq!(
            c,
            vec![
                Component { x: 0, y: 0, width: 2, height: 2, area: 2 },
                Component { x: 4, y: 0, width: 1, height: 2, area: 2 },
                Component { x: 2, y: 3, width: 2, height: 1, area: 2 },
            ]
        );
    }

    #[test]
    fn a_cropped_mask_goes_back_to_its_place_in_the_original_image() {
        // 8x8 -> shorter side 8 (kept), centre crop 4: the window starts at (2, 2).
        let g = Some(Geometry { resize: 8, crop: 4 });
        let mut small = vec![0u8; 16];
        small[0] = 1; // top-left of the crop
        small[15] = 1; // bottom-right
        let full = to_original(&small, 4, 4, 8, 8, g, 0);
        assert_eq!(full.len(), 64);
        assert_eq!(full.iter().filter(|&&v| v == 1).count(), 2);
        assert_eq!((full[2 * 8 + 2], full[5 * 8 + 5]), (1, 1));
        // 16x16 -> resized to 8x8 then cropped: each crop pixel covers 2x2 original pixels.
        let full = to_original(&small, 4, 4, 16, 16, g, 0);
        assert_eq!(full.iter().filter(|&&v| v == 1).count(), 8);
        assert_eq!((full[4 * 16 + 4], full[5 * 16 + 5], full[11 * 16 + 11]), (1, 1, 1));
        // No geometry: resized directly.
        assert_eq!(to_original(&[1u8, 0, 0, 1], 2, 2, 4, 4, None, 0).iter().filter(|&&v| v == 1).count(), 8);
    }

    #[test]
    fn ids_and_categories_follow_the_directory_rule() {
        let img = |rel: &str| InputImage { path: PathBuf::from(rel), rel: rel.into() };
        let cats = vec!["pill".to_string(), "tiles".to_string()];
        assert_eq!(img("tiles/test/crack/003.png").id(), "tiles/test/crack/003");
        assert_eq!(img("a.b/c").id(), "a.b/c");
        assert_eq!(category_of(&img("tiles/x.png"), None, &cats), Ok("tiles".into()));
        assert_eq!(category_of(&img("tiles/x.png"), Some("pill"), &cats), Ok("pill".into()));
        assert!(category_of(&img("x.png"), None, &cats).unwrap_err().contains("pill, tiles"));
        assert_eq!(category_of(&img("x.png"), None, &cats[..1]), Ok("pill".into()));
    }

    #[test]
    fn a_failed_append_leaves_the_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines.jsonl");
        append_line(&path, "{\"a\":1}").unwrap();
        append_line(&path, "{\"b\":2}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n{\"b\":2}\n");
        let err = append_line(&dir.path().join("missing/lines.jsonl"), "x").unwrap_err();
        assert!(err.to_string().contains("missing/lines.jsonl"), "{err}");
    }
}
