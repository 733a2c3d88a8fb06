//! Whether the store's database file is still the one it opened: a file
//! deleted or replaced under the running server would take appends into an
//! unlinked inode, lost at the next start.

use std::path::Path;

/// A file's path and its device and inode when opened: the file at that
/// path later is the same file only if both still match.
pub struct FileIdentity {
    path: std::path::PathBuf,
    dev_ino: (u64, u64),
}

impl FileIdentity {
    pub fn of(path: &Path) -> std::io::Result<Self> {
        Ok(Self { path: path.to_owned(), dev_ino: Self::dev_ino(path)? })
    }
    #[cfg(unix)]
    fn dev_ino(path: &Path) -> std::io::Result<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok((m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    fn dev_ino(path: &Path) -> std::io::Result<(u64, u64)> {
        std::fs::metadata(path).map(|_| (0, 0))
    }
    /// Why the file at the path is no longer the one opened, if it is not.
    pub fn changed(&self) -> Option<String> {
        match Self::dev_ino(&self.path) {
            Ok(now) if now == self.dev_ino => None,
            Ok(_) => Some(format!("{} was replaced by another file while the server runs", self.path.display())),
            Err(e) => Some(format!("{} is gone ({e}); it was deleted while the server runs", self.path.display())),
        }
    }
}
