//! File-system helpers: reads that name the path, crash-safe writes that never overwrite.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use super::PkiError;

/// Who may read a file written by [`write_new_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileVisibility {
    /// Private keys: owner read/write only (0600 on unix).
    Private,
    /// Certificates and public keys: world-readable (0644 on unix, minus the umask).
    Public,
}

/// Reads a whole file, telling a missing file apart from other read errors.
pub(super) fn read_file(path: &Path) -> Result<Vec<u8>, PkiError> {
    fs::read(path).map_err(|source| read_error(path, source))
}

/// Reads a whole UTF-8 file, telling a missing file apart from other read errors.
pub(super) fn read_file_to_string(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| read_error(path, source))
}

fn read_error(path: &Path, source: io::Error) -> PkiError {
    if source.kind() == io::ErrorKind::NotFound {
        return PkiError::MissingFile {
            path: path.to_path_buf(),
        };
    }
    PkiError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `path` exists; an unreadable parent directory is an error rather than "no".
pub(super) fn file_exists(path: &Path) -> Result<bool, PkiError> {
    path.try_exists().map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates `dir` and its parents if needed.
pub(super) fn create_dir_all(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `contents` to a new file at `path`.
///
/// The contents go to a temporary file in the same directory first and are renamed into place,
/// so a crash leaves either no file or a complete one, never a half-written key. An existing
/// file at `path` is an error, never overwritten.
pub(super) fn write_new_file(
    path: &Path,
    contents: &[u8],
    visibility: FileVisibility,
) -> Result<(), PkiError> {
    let write_error = |source: io::Error| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    if file_exists(path)? {
        return Err(PkiError::AlreadyExists {
            path: path.to_path_buf(),
        });
    }
    let parent_dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| write_error(io::Error::other("path has no file name")))?;
    // The random suffix keeps two concurrent writers from sharing a temporary file.
    let temp_path = parent_dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));

    let write_result = write_temp_file(&temp_path, contents, visibility)
        .and_then(|()| fs::rename(&temp_path, path));
    if let Err(source) = write_result {
        // Best effort: the temporary file is garbage either way, and the original error matters more.
        let _ = fs::remove_file(&temp_path);
        return Err(write_error(source));
    }
    sync_dir(parent_dir);
    Ok(())
}

fn write_temp_file(
    temp_path: &Path,
    contents: &[u8],
    visibility: FileVisibility,
) -> io::Result<()> {
    let mut open_options = OpenOptions::new();
    open_options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // The mode is applied at creation, so a private key is never readable by others, not
        // even for the moment between creating and chmod-ing the file.
        let mode = match visibility {
            FileVisibility::Private => 0o600,
            FileVisibility::Public => 0o644,
        };
        open_options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = visibility;
    let mut file = open_options.open(temp_path)?;
    file.write_all(contents)?;
    // Without this the rename could reach the disk before the data and leave an empty file
    // after a power loss.
    file.sync_all()
}

/// Flushes a directory entry change (the rename) to disk.
///
/// Best effort: the rename is already atomic, this only makes it durable across a power loss, and
/// some file systems refuse to fsync a directory.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(dir_file) = fs::File::open(dir) {
        let _ = dir_file.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_new_file_writes_contents_and_refuses_to_overwrite() {
        let temp_dir = tempfile::tempdir().unwrap();
        let path = temp_dir.path().join("secret.key");

        write_new_file(&path, b"first", FileVisibility::Private).unwrap();
        let error = write_new_file(&path, b"second", FileVisibility::Private).unwrap_err();

        assert!(matches!(error, PkiError::AlreadyExists { .. }), "{error}");
        assert_eq!(fs::read(&path).unwrap(), b"first");
        // No temporary files are left behind.
        let entries: Vec<_> = fs::read_dir(temp_dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn write_new_file_sets_unix_modes() {
        use std::os::unix::fs::PermissionsExt;

        let temp_dir = tempfile::tempdir().unwrap();
        let private_path = temp_dir.path().join("private.key");
        let public_path = temp_dir.path().join("public.pem");

        write_new_file(&private_path, b"key", FileVisibility::Private).unwrap();
        write_new_file(&public_path, b"cert", FileVisibility::Public).unwrap();

        let private_mode = fs::metadata(&private_path).unwrap().permissions().mode();
        let public_mode = fs::metadata(&public_path).unwrap().permissions().mode();
        assert_eq!(private_mode & 0o777, 0o600);
        assert_eq!(public_mode & 0o600, 0o600);
        assert_eq!(
            public_mode & 0o022,
            0,
            "public files are not writable by others"
        );
    }

    #[test]
    fn read_file_reports_missing_file_with_its_path() {
        let temp_dir = tempfile::tempdir().unwrap();
        let path = temp_dir.path().join("absent.pem");

        let error = read_file(&path).unwrap_err();

        assert!(matches!(error, PkiError::MissingFile { .. }));
        assert!(error.to_string().contains("absent.pem"), "{error}");
        assert!(error.to_string().contains("does not exist"), "{error}");
    }
}
