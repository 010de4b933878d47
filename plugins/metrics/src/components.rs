//! Connected components of a binary mask with 8-connectivity (a pixel touches the 8 pixels
//! around it), as the MVTec AD evaluation labels ground-truth regions for PRO
//! (`scipy.ndimage.label` with a 3x3 structure of ones).

/// For every pixel of the mask, the size of its component (0 for background), and the
/// number of components.
pub fn component_sizes(mask: &[u8], height: usize, width: usize) -> (Vec<u32>, u32) {
    let mut label = vec![u32::MAX; mask.len()];
    let mut sizes: Vec<u32> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    for start in 0..mask.len() {
        if mask[start] == 0 || label[start] != u32::MAX {
            continue;
        }
        let id = sizes.len() as u32;
        let mut size = 0u32;
        label[start] = id;
        stack.push(start);
        while let Some(i) = stack.pop() {
            size += 1;
            let (y, x) = (i / width, i % width);
            for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                    let j = ny * width + nx;
                    if mask[j] != 0 && label[j] == u32::MAX {
                        label[j] = id;
                        stack.push(j);
                    }
                }
            }
        }
        sizes.push(size);
    }
    let per_pixel = label.iter().map(|&l| if l == u32::MAX { 0 } else { sizes[l as usize] }).collect();
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
