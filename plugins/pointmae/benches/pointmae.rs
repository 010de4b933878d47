//! Per 224x224 cloud: FPS + kNN tokenizer, encoder run (the tiny test encoder), spread-back.
//! `cargo bench -p anoflow-plugin-pointmae --bench pointmae -- [--rounds N]`

use std::{path::Path, time::Instant};

use anoflow_ort_session::Provider;
use anoflow_plugin_pointmae::{encoder::Encoder, spread};

/// A dome of ~31k valid points (radius 100 px) in a 224x224 grid, like an object after plane removal.
fn cloud() -> Vec<f32> {
    let mut raw = vec![0.0f32; 224 * 224 * 3];
    for y in 0..224usize {
        for x in 0..224usize {
            let (dx, dy) = (x as f32 - 112.0, y as f32 - 112.0);
            let r2 = dx * dx + dy * dy;
            if r2 <= 100.0 * 100.0 {
                let i = (y * 224 + x) * 3;
                raw[i..i + 3].copy_from_slice(&[dx * 0.0004, dy * 0.0004, 0.5 + (1e4 - r2).sqrt() * 0.0004]);
            }
        }
    }
    raw
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize =
        args.iter().position(|a| a == "--rounds").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(10);
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-data/tiny_point_mae.onnx");
    let encoder = match Encoder::open(&model, "tiny_point_mae", 1, Provider::Cpu) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot open {}: {e}", model.display());
            std::process::exit(1);
        }
    };
    let raw = cloud();
    let (points, pixels) = spread::valid_points(&raw);
    println!("{} valid points, {rounds} rounds, 1 ONNX Runtime thread", points.len());
    for (groups, k) in [(1024usize, 32usize), (1024, 128)] {
        let (mut t_tok, mut t_enc, mut t_spread) = (0.0f64, 0.0f64, 0.0f64);
        for r in 0..rounds + 1 {
            let t0 = Instant::now();
            let tokens = spread::tokenize(&points, groups, k, r as u64);
            let t1 = Instant::now();
            let centres: Vec<f32> = tokens.centres.iter().flatten().copied().collect();
            let (features, c) = match encoder.run(tokens.groups, tokens.k, tokens.patches, centres) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            };
            let t2 = Instant::now();
            let (map, ..) = spread::spread_to_grid(&points, &pixels, &tokens.centres, &features, c, (224, 224), 8);
            let t3 = Instant::now();
            std::hint::black_box(map);
            if r > 0 {
                t_tok += (t1 - t0).as_secs_f64();
                t_enc += (t2 - t1).as_secs_f64();
                t_spread += (t3 - t2).as_secs_f64();
            }
        }
        let ms = |t: f64| t * 1e3 / rounds as f64;
        println!(
            "G={groups} k={k}: FPS+kNN {:.1} ms, encoder (tiny, C=64) {:.1} ms, spread-back+pool {:.1} ms, total {:.1} ms",
            ms(t_tok),
            ms(t_enc),
            ms(t_spread),
            ms(t_tok + t_enc + t_spread)
        );
    }
}
