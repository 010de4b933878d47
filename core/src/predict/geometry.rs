//! Masks back at the original image's size and place, and their connected components.

use super::*;

/// Where a pipeline-size map lands in the original `h x w` image: the canvas of the resized
/// image, the crop's place in it, and whether that fits the map's size.
pub(super) fn placement(
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
