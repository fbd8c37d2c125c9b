//! Files that hold a secret (the demo tenant's auth token, the admin token): readable and
//! writable by the owner only, and never written through a symlink or a hard link someone
//! else placed there.
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
