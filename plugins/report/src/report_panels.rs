//! The report's sample panels: one PNG per sample and focus, tiles side by side (image,
//! score maps, mask overlays, ground truth). Pixels are the content here, so these stay
//! rasters; their captions and colour bars are HTML text around them (`report_html.rs`).

use anoflow_seg_metrics::results;

use crate::draw::{self, Canvas, Rgb};
use crate::report::Kept;

/// Gap between tiles, in pixels (the HTML captions above the tiles use the same).
pub(crate) const GAP: usize = 6;

/// Overlay colours: true positive, false positive, false negative (missed).
pub(crate) const TP: Rgb = [40, 200, 70];
pub(crate) const FP: Rgb = [235, 40, 40];
pub(crate) const FN: Rgb = [40, 110, 255];

/// What a tile shows, for its caption.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tile {
    Image,
    /// A score map, with its colour scale (low, high).
    Score {
        name: String,
        range: (f32, f32),
    },
    /// A mask overlaid on the image: TP, FP, FN.
    Mask {
        name: String,
    },
    Truth,
}

/// The tiles of a panel and the raster holding them side by side.
pub(crate) struct Panel {
    pub(crate) tiles: Vec<Tile>,
    pub(crate) canvas: Canvas,
}

/// Which masks a panel shows: all of them, or only the one it was ranked by.
pub(crate) fn draw(k: &Kept, ranges: &[(String, (f32, f32))], only_mask: Option<&str>) -> Panel {
    let tile = |f: &dyn Fn(usize) -> Rgb| {
        let mut t = Canvas::new(k.w, k.h, draw::BLACK);
        for i in 0..k.h * k.w {
            t.data[i * 3..i * 3 + 3].copy_from_slice(&f(i));
        }
        t
    };
    let mut tiles: Vec<(Tile, Canvas)> = Vec::new();
    if let Some(img) = &k.image {
        tiles.push((Tile::Image, tile(&|i| [img[i * 3], img[i * 3 + 1], img[i * 3 + 2]])));
    }
    let score_names: Vec<String> = k.scores.iter().map(|s| s.0.clone()).collect();
    for ((source, s), short) in k.scores.iter().zip(results::short_names(&score_names)) {
        let range = ranges.iter().find(|r| &r.0 == source).map_or((0.0, 1.0), |r| r.1);
        let span = if range.1 > range.0 { range.1 - range.0 } else { 1.0 };
        tiles.push((Tile::Score { name: short, range }, tile(&|i| draw::viridis((s[i] - range.0) / span))));
    }
    // The mask tiles darken the image (or black without one) and colour TP, FP and FN.
    let base = |i: usize| -> Rgb {
        match &k.image {
            Some(img) => {
                let grey = (u16::from(img[i * 3]) + u16::from(img[i * 3 + 1]) + u16::from(img[i * 3 + 2])) / 3;
                let v = (grey * 2 / 5) as u8;
                [v, v, v]
            }
            None => draw::BLACK,
        }
    };
    let mask_names: Vec<String> = k.masks.iter().map(|m| m.0.clone()).collect();
    for ((source, m, _), short) in k.masks.iter().zip(results::short_names(&mask_names)) {
        if only_mask.is_some_and(|only| only != source) {
            continue;
        }
        let overlay = tile(&|i| match (m[i] != 0, k.gt[i] != 0) {
            (true, true) => TP,
            (true, false) => FP,
            (false, true) => FN,
            (false, false) => base(i),
        });
        tiles.push((Tile::Mask { name: short }, overlay));
    }
    tiles.push((Tile::Truth, tile(&|i| if k.gt[i] != 0 { draw::WHITE } else { draw::BLACK })));
    let width = tiles.len() * (k.w + GAP) - GAP;
    let mut canvas = Canvas::new(width, k.h, draw::WHITE);
    for (i, (_, t)) in tiles.iter().enumerate() {
        canvas.blit(t, i * (k.w + GAP), 0);
    }
    Panel { tiles: tiles.into_iter().map(|t| t.0).collect(), canvas }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anoflow_seg_metrics::confusion::Counts;

    fn kept() -> Kept {
        let (h, w) = (4, 4);
        let gt: Vec<u8> = (0..16).map(|i| u8::from(i < 4)).collect();
        let m: Vec<u8> = (0..16).map(|i| u8::from(i % 4 == 0)).collect();
        Kept {
            id: "a".into(),
            index: 0,
            category: "c".into(),
            defect: "d".into(),
            anomalous: true,
            h,
            w,
            image: Some(vec![200; 48]),
            scores: vec![("s.score".into(), (0..16).map(|i| i as f32).collect())],
            masks: vec![
                ("thr.mask".into(), m.clone(), Counts::of(&m, &gt)),
                ("ttt.mask".into(), vec![0; 16], Counts::of(&[0; 16], &gt)),
            ],
            gt,
        }
    }

    #[test]
    fn a_panel_overlays_tp_fp_fn_and_can_focus_on_one_mask() {
        let k = kept();
        let all = draw(&k, &[("s.score".into(), (0.0, 15.0))], None);
        assert_eq!(all.tiles.len(), 5, "{:?}", all.tiles);
        assert_eq!((all.canvas.width, all.canvas.height), (5 * 4 + 4 * GAP, 4));
        let thr = draw(&k, &[], Some("thr.mask"));
        assert_eq!(
            thr.tiles,
            vec![
                Tile::Image,
                Tile::Score { name: "s".into(), range: (0.0, 1.0) },
                Tile::Mask { name: "thr".into() },
                Tile::Truth
            ]
        );
        // The mask tile (third): pixel 0 is TP, pixel 1 FN (GT row 0), pixel 4 FP, pixel 5 darkened image.
        let x0 = 2 * (4 + GAP);
        assert_eq!(thr.canvas.get(x0, 0), TP);
        assert_eq!(thr.canvas.get(x0 + 1, 0), FN);
        assert_eq!(thr.canvas.get(x0, 1), FP);
        assert_eq!(thr.canvas.get(x0 + 1, 1), [80, 80, 80]);
        // The score tile runs the colour scale from low to high.
        assert_eq!(all.canvas.get(4 + GAP, 0), draw::viridis(0.0));
        assert_eq!(all.canvas.get(4 + GAP + 3, 3), draw::viridis(1.0));
    }
}
