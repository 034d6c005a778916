//! Console log files: `guest-<name>.log` and `hypervisor.log`, with io.c's time stamps.
//!
//! Files are opened `O_WRONLY|O_CREAT|O_APPEND`, mode 0644. With time stamps, a file starts
//! with a stamped `Logfile Opened` line and every line written is prefixed with
//! `[%Y-%m-%d %H:%M:%S] ` in local time (strftime, as the C daemon), carriage returns right
//! after a newline are dropped, and a line written in pieces is stamped once. Unlike the C
//! daemon, which keeps one "needs a stamp" flag for all guests, each file keeps its own.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// An open log file.
#[derive(Debug)]
pub(crate) struct LogFile {
    file: File,
    path: PathBuf,
    timestamps: bool,
    needts: bool,
    replace_escape: bool,
}

impl LogFile {
    /// Opens (creating) `path` for appending.
    pub(crate) fn open(path: &Path, timestamps: bool, replace_escape: bool) -> io::Result<LogFile> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(path)?;
        let mut log = LogFile {
            file,
            path: path.to_path_buf(),
            timestamps,
            needts: true,
            replace_escape,
        };
        if timestamps {
            log.write(b"Logfile Opened\n")?;
        }
        Ok(log)
    }

    /// Where it is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `data` (stamped per line when asked).
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if !self.timestamps {
            return self.write_raw(data);
        }
        let ts = timestamp();
        let mut data = data;
        while !data.is_empty() {
            let (line, found_nl) = match data.iter().position(|&b| b == b'\n') {
                Some(i) => (&data[..=i], true),
                None => (data, false),
            };
            if self.needts {
                self.write_raw(ts.as_bytes())?;
            }
            self.write_raw(line)?;
            self.needts = found_nl;
            data = &data[line.len()..];
            if found_nl {
                let cr = data.iter().take_while(|&&b| b == b'\r').count();
                data = &data[cr..];
            }
        }
        Ok(())
    }

    fn write_raw(&mut self, data: &[u8]) -> io::Result<()> {
        if !self.replace_escape || !data.contains(&0x1b) {
            return self.file.write_all(data);
        }
        let replaced: Vec<u8> = data
            .iter()
            .map(|&b| if b == 0x1b { b'.' } else { b })
            .collect();
        self.file.write_all(&replaced)
    }
}

/// `[%Y-%m-%d %H:%M:%S] ` in local time.
pub(crate) fn timestamp() -> String {
    // SAFETY: `time(NULL)` only returns the time.
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    // SAFETY: all-zero is a valid `struct tm`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let mut buf = [0u8; 32];
    // SAFETY: `localtime_r` fills our `tm` from our `now`; `strftime` writes at most
    // `buf.len()` bytes (NUL included) into `buf` with a NUL-terminated format.
    let n = unsafe {
        if libc::localtime_r(&now, &mut tm).is_null() {
            return String::new();
        }
        libc::strftime(
            buf.as_mut_ptr().cast(),
            buf.len(),
            c"[%Y-%m-%d %H:%M:%S] ".as_ptr(),
            &tm,
        )
    };
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(s: &str) -> String {
        // Replace every stamp with "[T] " for comparison.
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('[') {
            out.push_str(&rest[..i]);
            let end = rest[i..].find("] ").expect("stamp end") + i + 2;
            assert_eq!(end - i, 22, "stamp format: {:?}", &rest[i..end]);
            out.push_str("[T] ");
            rest = &rest[end..];
        }
        out + rest
    }

    #[test]
    fn lines_are_stamped_once_and_cr_after_nl_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("guest-a.log");
        let mut l = LogFile::open(&p, true, false).unwrap();
        l.write(b"Booting ").unwrap();
        l.write(b"Linux\n\r\rversion 6\n").unwrap();
        l.write(b"x").unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            stamped(&s),
            "[T] Logfile Opened\n[T] Booting Linux\n[T] version 6\n[T] x"
        );
    }

    #[test]
    fn plain_logs_are_byte_for_byte_and_escapes_can_be_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.log");
        let mut l = LogFile::open(&p, false, false).unwrap();
        l.write(b"a\r\n\x1b[0m").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"a\r\n\x1b[0m");
        let q = dir.path().join("h.log");
        let mut l = LogFile::open(&q, false, true).unwrap();
        l.write(b"\x1b[0m").unwrap();
        assert_eq!(std::fs::read(&q).unwrap(), b".[0m");
    }
}
