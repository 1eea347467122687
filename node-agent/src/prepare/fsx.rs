//! Host file writes for the steps: atomic (temp file in the same directory, fsync, rename, fsync
//! of the directory) and only when the content differs, so a reader never sees half a file, a
//! failure leaves the original intact and a second run touches nothing.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use super::StepError;

/// Reads `path`; `None` when it does not exist.
pub fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, StepError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StepError::file(path, "read", e)),
    }
}

/// Reads `path` as (lossy) text; `None` when it does not exist.
pub fn read_text_opt(path: &Path) -> Result<Option<String>, StepError> {
    Ok(read_opt(path)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// Whether `path` holds exactly `content`.
pub fn has_content(path: &Path, content: &[u8]) -> Result<bool, StepError> {
    Ok(read_opt(path)?.as_deref() == Some(content))
}

/// Writes `content` to `path` unless it already holds it; returns whether it wrote. A new file
/// gets `mode`; an existing one keeps its mode. Missing parent directories are created (0755).
pub fn write_if_changed(path: &Path, content: &[u8], mode: u32) -> Result<bool, StepError> {
    if has_content(path, content)? {
        return Ok(false);
    }
    replace(path, mode, |f| f.write_all(content))?;
    Ok(true)
}

/// Replaces `path` atomically with what `fill` writes into the temporary file. On any error the
/// temporary file is removed and `path` is left as it was.
pub fn replace(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<(), StepError> {
    let dir = path
        .parent()
        .ok_or_else(|| StepError::file(path, "write", std::io::Error::other("no parent")))?;
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| StepError::file(dir, "create directory", e))?;
    }
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(_) => mode,
    };
    cluster_common::fsutil::write_atomic_with(path, mode, fill)
        .map_err(|e| StepError::file(path, "write", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_when_content_differs_and_keeps_the_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("etc/sub/f.conf");
        assert!(write_if_changed(&p, b"a\n", 0o644).unwrap());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!write_if_changed(&p, b"a\n", 0o644).unwrap());
        assert!(write_if_changed(&p, b"b\n", 0o644).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"b\n");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn failing_write_leaves_the_original_intact_and_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fstab");
        std::fs::write(&p, b"original\n").unwrap();
        let err = replace(&p, 0o644, |f| {
            f.write_all(b"half")?;
            Err(std::io::Error::from_raw_os_error(28)) // ENOSPC: disk full
        })
        .unwrap_err();
        assert!(err.to_string().contains("cannot write"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), b"original\n");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn read_only_directory_fails_and_leaves_the_original_intact() {
        if nix::unistd::geteuid().is_root() {
            println!("SKIP: running as root, a read-only directory mode does not stop root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fstab");
        std::fs::write(&p, b"original\n").unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
        let err = write_if_changed(&p, b"new\n", 0o644).unwrap_err();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(err.to_string().contains("fstab"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), b"original\n");
    }
}
