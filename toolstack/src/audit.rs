//! xapi's logs: `audit.log`, one line per API call (time, user, session, call, object,
//! result), and the size-rotated files behind it and `xensource.log` (`name`, `name.1` …
//! `name.N`, as logrotate leaves them for XAPI). After logrotate moves a log away it sends
//! SIGHUP (XAPI's `/etc/logrotate.d/xapi` `postrotate`): every log then reopens its path
//! before its next line ([`reopen_on_sighup`], [`request_reopen`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bumped by each reopen request; a [`RotatingFile`] that has seen an older value reopens.
static REOPEN: AtomicU64 = AtomicU64::new(0);

/// Asks every [`RotatingFile`] of the process to reopen its path before its next write.
pub fn request_reopen() {
    REOPEN.fetch_add(1, Ordering::SeqCst);
}

/// Makes SIGHUP [`request_reopen`] (logrotate's way of telling a daemon its logs moved).
pub fn reopen_on_sighup() -> io::Result<signal_hook::SigId> {
    // SAFETY: the action only increments an atomic, which is async-signal-safe; it does
    // not allocate, lock or panic.
    unsafe {
        signal_hook::low_level::register(signal_hook::consts::SIGHUP, || {
            REOPEN.fetch_add(1, Ordering::SeqCst);
        })
    }
}

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// A log file rotated when it would grow past `max_bytes`, keeping `keep` older files.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    size: u64,
    /// The reopen requests seen.
    seen: u64,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl RotatingFile {
    /// Opens (appending to) `path`; `max_bytes` at least 1.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<RotatingFile> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_owned(),
            max_bytes: max_bytes.max(1),
            keep,
            file,
            size,
            seen: REOPEN.load(Ordering::SeqCst),
        })
    }

    /// Opens the path again (appending, created if moved away) and writes there from now on.
    pub fn reopen(&mut self) -> io::Result<()> {
        let _ = self.file.flush();
        self.file = open_append(&self.path)?;
        self.size = self.file.metadata()?.len();
        Ok(())
    }

    fn numbered(&self, n: usize) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        p.into()
    }

    /// `name.N-1` → `name.N` … `name` → `name.1`, the oldest dropped, then a fresh `name`.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.keep == 0 {
            self.file = File::create(&self.path)?;
        } else {
            let _ = std::fs::remove_file(self.numbered(self.keep));
            for n in (1..self.keep).rev() {
                let from = self.numbered(n);
                if from.exists() {
                    std::fs::rename(&from, self.numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.numbered(1))?;
            self.file = open_append(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let asked = REOPEN.load(Ordering::SeqCst);
        if asked != self.seen {
            self.seen = asked;
            self.reopen()?;
        }
        if self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// What one API call's audit line records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// When, in XAPI's `YYYYMMDDTHH:MM:SSZ` form.
    pub time: &'a str,
    /// The session's user (`auth_user_name`), or the name a login gave.
    pub user: &'a str,
    /// The session reference (never written: only [`session_tag`] of it).
    pub session: &'a str,
    /// The call, as `class.message`.
    pub call: &'a str,
    /// The object reference the call names, if any.
    pub object: Option<&'a str>,
    /// `Ok(())` or the error code.
    pub result: Result<(), &'a str>,
}

/// A short, non-reversible tag for a session reference (the first 12 hex digits of its
/// SHA-256), so lines of one session can be matched without the log granting access.
pub fn session_tag(session: &str) -> String {
    if session.is_empty() {
        return "-".into();
    }
    let d = Sha256::digest(session.as_bytes());
    d[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Quotes a field when it holds spaces, quotes or control characters.
fn field(s: &str) -> String {
    if !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c.is_control())
    {
        s.to_owned()
    } else {
        serde_json::Value::String(s.to_owned()).to_string()
    }
}

impl Entry<'_> {
    /// The line: `TIME user=U session=TAG call=C object=REF result=OK|ERROR:CODE`.
    pub fn line(&self) -> String {
        let result = match self.result {
            Ok(()) => "OK".to_owned(),
            Err(code) => format!("ERROR:{}", field(code)),
        };
        format!(
            "{} user={} session={} call={} object={} result={}\n",
            self.time,
            field(self.user),
            session_tag(self.session),
            field(self.call),
            field(self.object.unwrap_or("-")),
            result
        )
    }
}

/// `audit.log`: a line per call, rotated by size.
#[derive(Debug)]
pub struct AuditLog {
    file: Mutex<RotatingFile>,
}

impl AuditLog {
    /// Opens `dir/audit.log`, creating `dir`.
    pub fn open(dir: &Path, max_bytes: u64, keep: usize) -> io::Result<AuditLog> {
        std::fs::create_dir_all(dir)?;
        Ok(AuditLog {
            file: Mutex::new(RotatingFile::open(&dir.join("audit.log"), max_bytes, keep)?),
        })
    }

    /// Appends `e`'s line; a failed write is reported through `tracing`, not to the caller.
    pub fn record(&self, e: &Entry<'_>) {
        let line = e.line();
        let mut f = self.file.lock();
        if let Err(err) = f.write_all(line.as_bytes()).and_then(|()| f.flush()) {
            tracing::warn!(%err, "audit.log: write failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_quote_odd_fields_and_hide_the_session() {
        let e = Entry {
            time: "20261207T15:00:00Z",
            user: "root",
            session: "OpaqueRef:secret",
            call: "VM.start",
            object: Some("OpaqueRef:vm"),
            result: Err("VM_BAD_POWER_STATE"),
        };
        let l = e.line();
        assert_eq!(
            l,
            format!(
                "20261207T15:00:00Z user=root session={} call=VM.start object=OpaqueRef:vm \
                 result=ERROR:VM_BAD_POWER_STATE\n",
                session_tag("OpaqueRef:secret")
            )
        );
        assert!(!l.contains("secret"));
        assert_eq!(session_tag("OpaqueRef:secret").len(), 12);
        assert_eq!(session_tag(""), "-");
        let odd = Entry {
            user: "a b\n",
            object: None,
            result: Ok(()),
            ..e
        };
        let l = odd.line();
        assert!(
            l.contains("user=\"a b\\n\" ") && l.ends_with("object=- result=OK\n"),
            "{l}"
        );
        assert_eq!(l.lines().count(), 1);
    }

    #[test]
    fn a_reopen_request_moves_writing_to_a_fresh_file_at_the_path() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.log");
        let mut f = RotatingFile::open(&p, 1 << 20, 2).unwrap();
        f.write_all(b"before\n").unwrap();
        std::fs::rename(&p, d.path().join("x.log-20261207")).unwrap();
        // Without a request, writing goes on in the moved file (an open descriptor).
        f.write_all(b"still\n").unwrap();
        assert!(!p.exists());
        request_reopen();
        f.write_all(b"after\n").unwrap();
        let read = |s: &str| std::fs::read_to_string(d.path().join(s)).unwrap();
        assert_eq!(read("x.log"), "after\n");
        assert_eq!(read("x.log-20261207"), "before\nstill\n");
    }

    #[test]
    fn rotation_keeps_n_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.log");
        let mut f = RotatingFile::open(&p, 100, 2).unwrap();
        for i in 0..10 {
            f.write_all(format!("{i:049}\n").as_bytes()).unwrap(); // 50 bytes
        }
        // Two lines a file: the newest pair in x.log, then x.log.1, x.log.2; older dropped.
        let read = |s: &str| std::fs::read_to_string(d.path().join(s)).unwrap();
        assert_eq!(read("x.log").lines().count(), 2);
        assert!(read("x.log").starts_with(&format!("{:049}", 8)));
        assert!(read("x.log.1").starts_with(&format!("{:049}", 6)));
        assert!(read("x.log.2").starts_with(&format!("{:049}", 4)));
        assert!(!d.path().join("x.log.3").exists());
        // Reopening appends to what is there.
        drop(f);
        let mut f = RotatingFile::open(&p, 100, 2).unwrap();
        f.write_all(b"z\n").unwrap();
        assert!(read("x.log.1").starts_with(&format!("{:049}", 8)));
        assert_eq!(read("x.log"), "z\n");
    }
}
