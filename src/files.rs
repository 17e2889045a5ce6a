//! Reading the files an operator points the exporter at (configuration, jobs files, secrets, web
//! configuration) so that none of them can hang or bloat the process.
//!
//! A path can name a FIFO (whose `open` waits for a writer forever), a device (`/dev/zero` never
//! ends) or a directory. Only regular files are read: they are opened non-blocking, checked on
//! the open handle (so a file swapped between a check and the open is still caught), and read up
//! to a size bound. Callers on the async runtime run the read through [`off_workers`], which
//! moves it to the blocking pool and stops waiting after a deadline (a hung network file system
//! can still stall a regular file's read).

use std::fs::File;
use std::future::Future;
use std::io::{self, Read as _};
use std::path::Path;
use std::time::Duration;

/// The largest configuration, jobs or web configuration file read (16 MiB).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The largest secret, token or credentials-profile file read (64 KiB).
pub const MAX_SECRET_BYTES: u64 = 64 << 10;

/// How long a read on the blocking pool is waited for.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);

/// What kind of file a path is, for an error that says why it was refused.
fn kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "something else"
}

fn open(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Opening a FIFO for reading waits for a writer unless non-blocking.
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

/// Reads a regular file of at most `max` bytes. A FIFO, device, socket or directory, or a
/// larger file, is an error whose message says which; callers name the path.
pub fn read(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file but {}", kind(&meta)),
        ));
    }
    let too_big = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        )
    };
    if meta.len() > max {
        return Err(too_big());
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    // One byte more than allowed tells a file that grew since the check.
    file.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(too_big());
    }
    Ok(out)
}

/// [`read`], as UTF-8 text.
pub fn read_to_string(path: &Path, max: u64) -> io::Result<String> {
    String::from_utf8(read(path, max)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// A blocking call ran past its deadline or could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Still running after the deadline (it finishes on its own; nothing waits for it).
    #[error("gave up after {0:?}: a file read did not finish (a hung file system?)")]
    TimedOut(Duration),
    /// The blocking task panicked or the runtime is shutting down.
    #[error("the blocking task did not complete: {0}")]
    Join(String),
}

/// Runs `f` on the blocking pool and waits for it up to `deadline`, so file reads never occupy
/// an async worker.
pub fn off_workers<T, F>(deadline: Duration, f: F) -> impl Future<Output = Result<T, Error>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let task = tokio::task::spawn_blocking(f);
    async move {
        match tokio::time::timeout(deadline, task).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::Join(e.to_string())),
            Err(_) => Err(Error::TimedOut(deadline)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_regular_files_up_to_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("a");
        std::fs::write(&f, "hello").expect("write");
        assert_eq!(read_to_string(&f, 5).expect("reads"), "hello");
        let e = read_to_string(&f, 4).expect_err("too big");
        assert_eq!(e.to_string(), "larger than 4 bytes");
        let e = read(dir.path(), 5).expect_err("directory");
        assert_eq!(e.to_string(), "not a regular file but a directory");
        assert!(read(&dir.path().join("missing"), 5).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_or_a_device_is_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        // Without a writer, a blocking open would never return and this test would hang.
        let e = read(&fifo, 1024).expect_err("fifo");
        assert_eq!(e.to_string(), "not a regular file but a FIFO");
        let e = read(Path::new("/dev/zero"), 1024).expect_err("device");
        assert_eq!(e.to_string(), "not a regular file but a device");
    }

    // Real time: paused time does not advance while a blocking task runs.
    #[tokio::test]
    async fn off_workers_gives_up_at_the_deadline() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let r = off_workers(Duration::from_millis(50), move || rx.recv().is_ok()).await;
        assert!(matches!(r, Err(Error::TimedOut(_))), "{r:?}");
        drop(tx);
        let r = off_workers(Duration::from_secs(5), || 7).await;
        assert_eq!(r.expect("runs"), 7);
    }
}
