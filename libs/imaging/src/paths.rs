//! Which files are images, and shell-style path patterns (`*`, `?`, `**`), shared by the
//! `folder` source and `anoflow predict` so that both read the same inputs from one pattern.

use std::path::Path;

/// A visible regular file named `.png`, `.tif` or `.tiff` (any case).
pub fn is_image_file(p: &Path) -> bool {
    let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
    let ext = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    !hidden && p.is_file() && matches!(ext.as_deref(), Some("png" | "tif" | "tiff"))
}

/// Whether `s` holds a pattern character.
pub fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Matches one path component against a pattern with `*` and `?`.
pub fn match_component(pat: &[u8], name: &[u8]) -> bool {
    match (pat.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => match_component(&pat[1..], name) || (!name.is_empty() && match_component(pat, &name[1..])),
        (Some(b'?'), Some(_)) => match_component(&pat[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => match_component(&pat[1..], &name[1..]),
        _ => false,
    }
}

/// Matches relative path components against pattern components (`**`: any depth).
pub fn match_path(pat: &[&str], path: &[&str]) -> bool {
    match pat.first() {
        None => path.is_empty(),
        Some(&"**") => (0..=path.len()).any(|k| match_path(&pat[1..], &path[k..])),
        Some(p) => {
            !path.is_empty() && match_component(p.as_bytes(), path[0].as_bytes()) && match_path(&pat[1..], &path[1..])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_and_paths_match_like_a_shell() {
        assert!(match_component(b"*.png", b"a.png"));
        assert!(match_component(b"a?c", b"abc"));
        assert!(!match_component(b"*.png", b"a.tif"));
        assert!(match_path(&["**", "*.png"], &["x", "y", "a.png"]));
        assert!(match_path(&["**", "*.png"], &["a.png"]));
        assert!(!match_path(&["x", "*.png"], &["y", "a.png"]));
        assert!(!match_path(&["*", "*.png"], &["a", "b", "c.png"]));
        assert!(match_path(&["*", "good", "*"], &["x", "good", "1.png"]));
        assert!(match_component(b"0?1*", b"001_x"));
        assert!(has_wildcard("a/*.png") && !has_wildcard("a/b.png"));
    }

    #[test]
    fn image_files_are_visible_pngs_and_tiffs() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.PNG", "b.tiff", ".c.png", "d.jpg"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let ok = |n: &str| is_image_file(&dir.path().join(n));
        assert!(ok("a.PNG") && ok("b.tiff"));
        assert!(!ok(".c.png") && !ok("d.jpg") && !ok("missing.png"));
    }
}
