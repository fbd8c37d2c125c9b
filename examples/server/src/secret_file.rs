//! Files that hold a secret (the demo tenant's auth token, the admin token, the SQLite
//! database with the tenants' tokens): readable and writable by the owner only, and the token
//! files never written through a symlink or a hard link someone else placed there.
//!
//! The secret goes to a new file beside the target, created exclusively (`O_CREAT | O_EXCL`,
//! which never follows a symlink) with mode 0600, and is then renamed over the target. A
//! rename replaces the directory entry itself: whatever the old entry pointed at (a symlink's
//! target, another name of a hard-linked file) is left as it was.

use std::{
    fs::{self, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
};

use tower_twilio::BoxError;

use crate::twilio_presets::random_hex;

/// Writes `secret` and a newline to `path`, replacing what is there; the file is the owner's
/// only (mode 0600 on Unix).
pub fn write(path: &Path, secret: &str, what: &str) -> Result<(), BoxError> {
    let fail = |e: std::io::Error| format!("cannot write the {what} file {}: {e}", path.display());
    let temporary = temporary_beside(path);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(secret.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    });
    let renamed = written.and_then(|()| fs::rename(&temporary, path));
    if let Err(error) = renamed {
        let _ = fs::remove_file(&temporary);
        return Err(fail(error).into());
    }
    Ok(())
}

/// `.<name>.<random>.tmp` in the same directory (a rename must not cross file systems).
fn temporary_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "secret".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(
        ".{}.{}.tmp",
        name.trim_start_matches('.'),
        random_hex(8)
    ))
}

/// The SQLite database file and the files SQLite keeps beside it while it is open.
const SQLITE_SIDECARS: [&str; 3] = ["-journal", "-wal", "-shm"];

/// Makes the SQLite database at `path` the owner's only (mode 0600 on Unix) before SQLite opens
/// it: a missing file is created empty with mode 0600 (SQLite would create it 0644, less the
/// umask, and an empty file is a new database to it); an existing one, and any journal, WAL or
/// shared-memory file left beside it, loses its group and other bits, with a warning. SQLite
/// gives the journal, WAL and shared-memory files it creates the database file's own mode
/// (whatever the umask), so they follow. Call [`check_sqlite`] once the database is open.
pub fn prepare_sqlite(path: &Path) -> Result<(), BoxError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // `create_new` never follows a symlink; an existing file (or link) is left to the
        // check below.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => {
                return Err(format!(
                    "cannot create the database file {}: {error}",
                    path.display()
                )
                .into());
            }
        }
    }
    check_sqlite(path)
}

/// Removes the group and other bits from the database at `path` and the journal, WAL and
/// shared-memory files beside it, when any has them (with a warning naming the file).
pub fn check_sqlite(path: &Path) -> Result<(), BoxError> {
    owner_only(path)?;
    for suffix in SQLITE_SIDECARS {
        let mut sidecar = path.as_os_str().to_owned();
        sidecar.push(suffix);
        owner_only(Path::new(&sidecar))?;
    }
    Ok(())
}

/// Takes the group and other permission bits off `path`, if it exists and has any.
#[cfg(unix)]
fn owner_only(path: &Path) -> Result<(), BoxError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |e: std::io::Error| format!("cannot restrict {} to its owner: {e}", path.display());
    let mode = match fs::metadata(path) {
        Ok(metadata) => metadata.permissions().mode() & 0o7777,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(fail(error).into()),
    };
    if mode & 0o077 != 0 {
        let restricted = mode & 0o700;
        fs::set_permissions(path, fs::Permissions::from_mode(restricted)).map_err(fail)?;
        tracing::warn!(
            file = %path.display(),
            "the file holds auth tokens and was readable by other users (mode {mode:o}); it is \
             now mode {restricted:o}"
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn owner_only(_path: &Path) -> Result<(), BoxError> {
    Ok(())
}
