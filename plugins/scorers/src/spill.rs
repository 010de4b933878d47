//! Rows of `f32` kept in an unnamed temporary file instead of memory: written once, in order,
//! and read back by index. The file has no name in its directory (Linux `O_TMPFILE`; elsewhere
//! it is unlinked as soon as it is created), so nothing is left behind whether the holder is
//! dropped, unwinds from a panic or the process is killed.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Bytes converted per `write` call while appending.
const WRITE_BLOCK: usize = 1 << 16;

/// Rows of `dim` floats appended to a temporary file.
pub struct RowSpill {
    file: File,
    dir: PathBuf,
    dim: usize,
    rows: usize,
    block: Vec<u8>,
}

impl RowSpill {
    /// An empty spill of `dim`-wide rows in a new unnamed file in `dir`.
    pub fn new_in(dir: &Path, dim: usize) -> io::Result<Self> {
        let file = tempfile::tempfile_in(dir)?;
        Ok(Self { file, dir: dir.to_path_buf(), dim, rows: 0, block: Vec::with_capacity(WRITE_BLOCK) })
    }

    /// A spill over an already open, empty `file` (tests give it one that fails).
    #[cfg(test)]
    pub fn over(file: File, dir: &Path, dim: usize) -> Self {
        Self { file, dir: dir.to_path_buf(), dim, rows: 0, block: Vec::with_capacity(WRITE_BLOCK) }
    }

    /// The directory the file lives in (for error messages).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends whole rows (`rows.len()` a multiple of the width) at the end of the file.
    pub fn append(&mut self, rows: &[f32]) -> io::Result<()> {
        debug_assert_eq!(rows.len() % self.dim.max(1), 0, "spill: a partial row");
        for part in rows.chunks(WRITE_BLOCK / 4) {
            self.block.clear();
            self.block.extend(part.iter().flat_map(|v| v.to_ne_bytes()));
            self.file.write_all(&self.block)?;
        }
        self.rows += rows.len() / self.dim.max(1);
        Ok(())
    }

    /// The rows at `picked`, in that order, one after another.
    pub fn gather(&self, picked: &[usize]) -> io::Result<Vec<f32>> {
        let row_bytes = self.dim * 4;
        let mut bytes = vec![0u8; row_bytes];
        let mut out = Vec::with_capacity(picked.len() * self.dim);
        for &i in picked {
            if i >= self.rows {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("row {i} asked of a spill of {} rows", self.rows),
                ));
            }
            read_exact_at(&self.file, &mut bytes, (i * row_bytes) as u64)?;
            out.extend(bytes.chunks_exact(4).map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]])));
        }
        Ok(out)
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "spill file ended early")),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, dim: usize) -> Vec<f32> {
        // Scattered finite bit patterns, subnormals among them (NaN and infinity are refused
        // upstream): every one must come back as it went in.
        (0..n * dim).map(|i| -f32::from_bits((i as u32).wrapping_mul(2_654_435_761) & 0x7f7f_ffff)).collect()
    }

    #[test]
    fn gathered_rows_are_the_appended_bits_in_the_asked_order() {
        let dir = tempfile::tempdir().unwrap();
        let dim = 1024;
        let data = rows(300, dim);
        let mut spill = RowSpill::new_in(dir.path(), dim).unwrap();
        // Appended in uneven pieces, one of them spanning several write blocks.
        for piece in [&data[..dim], &data[dim..50 * dim], &data[50 * dim..]] {
            spill.append(piece).unwrap();
        }
        assert_eq!(spill.rows(), 300);
        let picked = [299, 0, 17, 17, 150, 1];
        let got = spill.gather(&picked).unwrap();
        let want: Vec<u32> =
            picked.iter().flat_map(|&i| data[i * dim..(i + 1) * dim].iter().map(|v| v.to_bits())).collect();
        assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want);
        let err = spill.gather(&[300]).unwrap_err();
        assert!(err.to_string().contains("row 300 asked of a spill of 300 rows"), "{err}");
    }

    #[test]
    fn the_file_has_no_name_and_is_gone_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = RowSpill::new_in(dir.path(), 4).unwrap();
        spill.append(&rows(1000, 4)).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the spill shows in its directory");
        // A panic while the spill is held leaves nothing behind either.
        let held = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _spill = RowSpill::new_in(dir.path(), 4).unwrap();
            panic!("fit failed");
        }));
        assert!(held.is_err());
        drop(spill);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("absent");
        assert!(RowSpill::new_in(&gone, 8).is_err());
    }
}
