//! Connected components of binary `h x w` masks (row-major, 0 = background) with
//! 8-connectivity (a pixel touches the 8 pixels around it), as the MVTec AD evaluation labels
//! ground-truth regions for PRO (`scipy.ndimage.label` with a 3x3 structure of ones).
//! Components are numbered in the order of their first pixel in row-major order.

/// Each pixel's component (`u32::MAX` for background) and the size of every component.
pub fn components(mask: &[u8], h: usize, w: usize) -> (Vec<u32>, Vec<usize>) {
    let mut label = vec![u32::MAX; h * w];
    let mut sizes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..h * w {
        if mask[start] == 0 || label[start] != u32::MAX {
            continue;
        }
        let id = sizes.len() as u32;
        label[start] = id;
        stack.push(start);
        let mut size = 0;
        while let Some(p) = stack.pop() {
            size += 1;
            let (y, x) = (p / w, p % w);
            for ny in y.saturating_sub(1)..(y + 2).min(h) {
                for nx in x.saturating_sub(1)..(x + 2).min(w) {
                    let q = ny * w + nx;
                    if mask[q] != 0 && label[q] == u32::MAX {
                        label[q] = id;
                        stack.push(q);
                    }
                }
            }
        }
        sizes.push(size);
    }
    (label, sizes)
}

/// For every pixel of the mask, the size of its component (0 for background), and the
/// number of components.
pub fn component_sizes(mask: &[u8], h: usize, w: usize) -> (Vec<u32>, u32) {
    let (label, sizes) = components(mask, h, w);
    let per_pixel = label.iter().map(|&l| if l == u32::MAX { 0 } else { sizes[l as usize] as u32 }).collect();
    (per_pixel, sizes.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagonal_neighbours_join_and_gaps_split() {
        #[rustfmt::skip]
        let m = [
            1, 0, 0, 0, 1,
            0, 1, 0, 0, 1,
            0, 0, 0, 0, 0,
            1, 1, 0, 1, 0,
        ];
        let (sizes, n) = component_sizes(&m, 4, 5);
        assert_eq!(n, 4);
        #[rustfmt::skip]
        let expected = [
            2, 0, 0, 0, 2,
            0, 2, 0, 0, 2,
            0, 0, 0, 0, 0,
            2, 2, 0, 1, 0,
        ];
        assert_eq!(sizes, expected);
        let (label, sizes) = components(&m, 4, 5);
        assert_eq!(sizes, vec![2, 2, 2, 1]);
        assert_eq!((label[0], label[4], label[15], label[18], label[1]), (0, 1, 2, 3, u32::MAX));
    }

    #[test]
    fn full_and_empty_masks() {
        let (s, n) = component_sizes(&vec![1; 224 * 224], 224, 224);
        assert_eq!(n, 1);
        assert!(s.iter().all(|&v| v == 224 * 224));
        let (s, n) = component_sizes(&vec![0; 224 * 224], 224, 224);
        assert_eq!(n, 0);
        assert!(s.iter().all(|&v| v == 0));
    }
}
