//! The predict loop: images in, masks, score maps and JSON lines out, throughput at the end.

use super::*;

/// Appends one line to a file; a failed write is rolled back so the file never holds part
/// of a line.
pub(super) fn append_line(path: &Path, line: &str) -> Result<(), PredictError> {
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

pub(super) fn write_png(path: &Path, h: usize, w: usize, data: &[u8]) -> Result<(), PredictError> {
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

pub(super) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((q * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

/// The session: the predictor, where results go, and what was measured.
pub(super) struct Session<'a> {
    bundle: &'a Bundle,
    predictor: &'a Predictor<'a>,
    opts: &'a PredictOptions,
    outputs: Vec<usize>,
    latencies: Vec<f64>,
    errors: usize,
    lines: PathBuf,
}

pub(super) fn port_value<'v>(
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

pub(super) fn ms(d: Duration) -> f64 {
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
