//! A small RGB raster for the report's sample panels (where pixels are the content: images,
//! score maps, masks) and the viridis colour map with its CSS gradient for the panels' colour
//! bars. Charts are SVG, from the `anoflow-charts` library.

/// An RGB8 image, row-major.
#[derive(Clone, Debug)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

pub type Rgb = [u8; 3];

pub const WHITE: Rgb = [255, 255, 255];
pub const BLACK: Rgb = [0, 0, 0];

pub fn hex(c: Rgb) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// Viridis at 0.0, 0.1, ..., 1.0 (perceptually uniform, readable in grey).
const VIRIDIS: [Rgb; 11] = [
    [0x44, 0x01, 0x54],
    [0x48, 0x24, 0x75],
    [0x41, 0x44, 0x87],
    [0x35, 0x5f, 0x8d],
    [0x2a, 0x78, 0x8e],
    [0x21, 0x91, 0x8c],
    [0x22, 0xa8, 0x84],
    [0x44, 0xbf, 0x70],
    [0x7a, 0xd1, 0x51],
    [0xbd, 0xdf, 0x26],
    [0xfd, 0xe7, 0x25],
];

/// A CSS `linear-gradient` through viridis, left (0) to right (1): the panels' colour bars.
pub fn viridis_css() -> String {
    let stops: Vec<String> = VIRIDIS.iter().map(|&c| hex(c)).collect();
    format!("linear-gradient(to right,{})", stops.join(","))
}

/// Viridis colour of `t` in [0, 1] (clamped; NaN is black).
pub fn viridis(t: f32) -> Rgb {
    if t.is_nan() {
        return BLACK;
    }
    let x = t.clamp(0.0, 1.0) * 10.0;
    let i = (x.floor() as usize).min(9);
    let f = x - i as f32;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    [0, 1, 2].map(|c| (f32::from(a[c]) + (f32::from(b[c]) - f32::from(a[c])) * f).round() as u8)
}

impl Canvas {
    pub fn new(width: usize, height: usize, background: Rgb) -> Self {
        let mut data = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            data.extend_from_slice(&background);
        }
        Self { width, height, data }
    }

    pub fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.data[i..i + 3].copy_from_slice(&c);
        }
    }

    pub fn get(&self, x: usize, y: usize) -> Rgb {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    pub fn fill_rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: Rgb) {
        for yy in y.max(0)..(y + h).min(self.height as i64) {
            for xx in x.max(0)..(x + w).min(self.width as i64) {
                self.set(xx, yy, c);
            }
        }
    }

    /// Copies `src` (an RGB tile) with its top-left corner at (x, y).
    pub fn blit(&mut self, src: &Canvas, x: usize, y: usize) {
        for row in 0..src.height.min(self.height.saturating_sub(y)) {
            let n = src.width.min(self.width.saturating_sub(x)) * 3;
            let d = ((y + row) * self.width + x) * 3;
            let s = row * src.width * 3;
            self.data[d..d + n].copy_from_slice(&src.data[s..s + n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_end_points_and_monotone_green() {
        assert_eq!(viridis(0.0), [0x44, 0x01, 0x54]);
        assert_eq!(viridis(1.0), [0xfd, 0xe7, 0x25]);
        assert_eq!(viridis(2.0), viridis(1.0));
        let greens: Vec<u8> = (0..=20).map(|i| viridis(i as f32 / 20.0)[1]).collect();
        assert!(greens.windows(2).all(|w| w[0] <= w[1]), "{greens:?}");
    }

    #[test]
    fn blit_clips_at_the_border_and_the_gradient_spans_viridis() {
        let mut c = Canvas::new(40, 20, WHITE);
        let tile = Canvas::new(5, 5, [1, 2, 3]);
        c.blit(&tile, 37, 17);
        assert_eq!(c.get(39, 19), [1, 2, 3]);
        assert_eq!(c.get(36, 19), WHITE);
        let css = viridis_css();
        assert!(css.starts_with("linear-gradient(to right,#440154,") && css.ends_with("#fde725)"), "{css}");
    }
}
