//! Atomic file replacement, the one way ctl and the agents write files: a temporary file in the
//! same directory, written with its final mode, fsynced, then renamed over the target (and the
//! directory fsynced), so a reader never sees half a file and a failure leaves the old file
//! intact with no temporary file behind.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Replaces `path` atomically with what `fill` writes, with Unix `mode` (e.g. 0o600 for keys,
/// also when the file existed with another mode). The parent directory must exist.
pub fn write_atomic_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} has no file name", path.display())))?
        .to_string_lossy()
        .into_owned();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    fill(tmp.as_file_mut())?;
    // The umask may have narrowed the mode at creation: set it exactly.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `contents` to `path` atomically with Unix `mode`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    write_atomic_with(path, mode, |f| f.write_all(contents))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_mode_and_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k.key");
        write_atomic(&p, b"one", 0o644).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn failure_leaves_original_intact() {
        let d = tempfile::tempdir().unwrap();
        assert!(write_atomic(&d.path().join("missing-dir").join("f"), b"x", 0o644).is_err());
        let p = d.path().join("f");
        std::fs::write(&p, b"original").unwrap();
        let err = write_atomic_with(&p, 0o644, |f| {
            f.write_all(b"half")?;
            Err(std::io::Error::from_raw_os_error(28))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"original");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
