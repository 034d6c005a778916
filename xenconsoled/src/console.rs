//! One guest's console: io.c's `struct console` and what is done to it.
//!
//! [`Console::create_ring`] is `console_create_ring` (run when the domain appears and each
//! time its `console` directory changes): gather `ring-ref` and `port`, skip consoles whose
//! `type` is not `xenconsoled`, map the page (grant first, then the frame), bind the event
//! channel (again only if the port changed), open the pty and the log. The handlers move
//! bytes between ring, buffer, log and pty.

use std::path::PathBuf;
use std::time::Instant;

use evtchn::{EventChannel, Evtchn};
use gnttab::{Access, GrantMap};
use xen_ring::console::{ConsoleRing, End, OUT_SIZE};
use xen_types::mem::SharedMemory;
use xen_types::{DomId, EvtchnPort, GrantRef};
use xenbus::WatchId;

use crate::buffer::Buffer;
use crate::daemon::Env;
use crate::log::LogFile;
use crate::pty::Pty;
use crate::{Error, Result, DEFAULT_LIMIT, RATE_LIMIT_ALLOWANCE, RATE_LIMIT_PERIOD};

/// Bytes read from the pty at a time (io.c's `msg[80]`).
const TTY_CHUNK: usize = 80;

type Ring = ConsoleRing<Box<dyn SharedMemory>>;

/// A bound console event channel: its own handle (one per console, as io.c, so a
/// rate-limited console's descriptor is simply left out of the poll).
pub(crate) struct Channel {
    pub(crate) handle: Evtchn,
    pub(crate) local: EvtchnPort,
    remote: EvtchnPort,
}

/// One guest's console.
pub(crate) struct Console {
    pub(crate) domid: DomId,
    /// `/local/domain/<id>/console`.
    pub(crate) xspath: String,
    /// The frame mapped by foreign mapping (`None` when mapped by grant or not mapped).
    ring_ref: Option<u64>,
    pub(crate) ring: Option<Ring>,
    pub(crate) chan: Option<Channel>,
    pub(crate) pty: Option<Pty>,
    pub(crate) log: Option<LogFile>,
    pub(crate) buffer: Buffer,
    pub(crate) event_count: u32,
    pub(crate) next_period: Instant,
    pub(crate) is_dead: bool,
    pub(crate) last_seen: u64,
    pub(crate) watch: Option<WatchId>,
    /// The last error met serving it, for status and logs.
    pub(crate) error: Option<String>,
    /// Poll slots of this iteration.
    pub(crate) evtchn_slot: Option<usize>,
    pub(crate) tty_slot: Option<usize>,
}

/// Parses a decimal `%u`-style value (surrounding whitespace allowed).
fn parse_u64(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

/// Parses a C `%i`/`strtoul(.., 0)` value: decimal, `0x` hexadecimal or `0` octal.
fn parse_c_int(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u64::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

impl Console {
    pub(crate) fn new(domid: DomId) -> Console {
        Console {
            domid,
            xspath: format!("{}/console", xenbus::paths::domain_path(domid)),
            ring_ref: None,
            ring: None,
            chan: None,
            pty: None,
            log: None,
            buffer: Buffer::default(),
            event_count: 0,
            next_period: Instant::now() + RATE_LIMIT_PERIOD,
            is_dead: false,
            last_seen: 0,
            watch: None,
            error: None,
            evtchn_slot: None,
            tty_slot: None,
        }
    }

    /// Enabled: its event channel is bound (io.c's `console_enabled`).
    pub(crate) fn enabled(&self) -> bool {
        self.chan.is_some()
    }

    fn gather(&self, env: &Env, name: &str, parse: fn(&str) -> Option<u64>) -> Result<u64> {
        let path = format!("{}/{name}", self.xspath);
        let value = env.store.read(&path)?.ok_or_else(|| Error::Missing {
            dom: self.domid,
            path: path.clone(),
        })?;
        parse(&value).ok_or(Error::BadValue {
            dom: self.domid,
            path,
            value,
        })
    }

    /// io.c's `console_create_ring`. Returns without doing anything for a console of
    /// another `type`.
    pub(crate) fn create_ring(&mut self, env: &Env) -> Result<()> {
        let ring_ref = self.gather(env, "ring-ref", parse_u64)?;
        let port = self.gather(env, "port", parse_c_int)?;
        let port = u32::try_from(port).map_err(|_| Error::BadValue {
            dom: self.domid,
            path: format!("{}/port", self.xspath),
            value: port.to_string(),
        })?;
        let port = EvtchnPort(port);
        if let Some(t) = env.store.read(&format!("{}/type", self.xspath))? {
            if t != "xenconsoled" {
                return Ok(());
            }
        }
        // Mapped by frame and the frame changed: remap.
        if self.ring_ref.is_some_and(|r| r != ring_ref) {
            self.unmap();
        }
        if self.ring.is_none() {
            self.map(env, ring_ref)?;
        }
        if self.chan.as_ref().is_none_or(|c| c.remote != port) {
            self.chan = None;
            let handle = (env.open_evtchn)()?;
            let local = handle.bind_interdomain(self.domid, port)?;
            self.chan = Some(Channel {
                handle,
                local,
                remote: port,
            });
        }
        if self.pty.is_none() {
            if let Err(e) = self.create_tty(env) {
                self.chan = None;
                return Err(e);
            }
        }
        if env.config.log_guest && self.log.is_none() {
            self.open_log(env);
        }
        Ok(())
    }

    /// Maps the page: grant `GNTTAB_RESERVED_CONSOLE`, else frame `ring_ref`.
    fn map(&mut self, env: &Env, ring_ref: u64) -> Result<()> {
        let grant = match &env.gnttab {
            Some(g) => match g.map_one(
                self.domid,
                GrantRef(xen_sys::GNTTAB_RESERVED_CONSOLE),
                Access::ReadWrite,
            ) {
                Ok(m) => {
                    self.set_ring(Box::new(m))?;
                    self.ring_ref = None;
                    return Ok(());
                }
                Err(e) => e.to_string(),
            },
            None => "no grant device".to_string(),
        };
        match env.xen.map_foreign(self.domid, &[ring_ref], true) {
            Ok(m) => {
                self.set_ring(Box::new(m))?;
                self.ring_ref = Some(ring_ref);
                Ok(())
            }
            Err(e) => Err(Error::Map {
                dom: self.domid,
                grant,
                frame: ring_ref,
                foreign: e.to_string(),
            }),
        }
    }

    fn set_ring(&mut self, mem: Box<dyn SharedMemory>) -> Result<()> {
        let ring = ConsoleRing::new(mem, End::Backend).map_err(|source| Error::Ring {
            dom: self.domid,
            source,
        })?;
        self.ring = Some(ring);
        Ok(())
    }

    /// io.c's `console_unmap_interface`.
    pub(crate) fn unmap(&mut self) {
        self.ring = None;
        self.ring_ref = None;
    }

    /// io.c's `console_create_tty`: a pty, `console/limit` read, `console/tty` written.
    pub(crate) fn create_tty(&mut self, env: &Env) -> Result<()> {
        let pty =
            Pty::open().map_err(crate::io(format!("domain {}: creating a pty", self.domid)))?;
        let limit = env
            .store
            .read(&format!("{}/limit", self.xspath))?
            .map_or(DEFAULT_LIMIT, |v| {
                parse_c_int(&v).map_or(DEFAULT_LIMIT, |l| l as usize)
            });
        self.buffer.set_limit(limit);
        env.store
            .write(&format!("{}/tty", self.xspath), pty.name())?;
        self.pty = Some(pty);
        Ok(())
    }

    /// io.c's `create_console_log` (no log without a `name`). Failures are logged and
    /// recorded, not fatal: the console is served without a log.
    pub(crate) fn open_log(&mut self, env: &Env) {
        self.log = None;
        let name_path = format!("{}/name", xenbus::paths::domain_path(self.domid));
        let name = match env.store.read(&name_path) {
            Ok(Some(n)) if !n.is_empty() => n,
            Ok(_) => return,
            Err(e) => {
                self.fail(e.into());
                return;
            }
        };
        if name.contains('/') || name == "." || name == ".." {
            self.fail(Error::BadValue {
                dom: self.domid,
                path: name_path,
                value: name,
            });
            return;
        }
        let path: PathBuf = env.config.log_dir.join(format!("guest-{name}.log"));
        match LogFile::open(&path, env.config.timestamp_guest, env.config.replace_escape) {
            Ok(l) => self.log = Some(l),
            Err(e) => self.fail(Error::Io {
                what: format!("opening log {}", path.display()),
                source: e,
            }),
        }
    }

    /// Records an error met serving this console, reporting it once (a guest that keeps
    /// breaking its ring must not flood the daemon's log).
    pub(crate) fn fail(&mut self, e: Error) {
        let msg = e.to_string();
        if self.error.as_deref() != Some(&msg) {
            tracing::warn!("{msg}");
            self.error = Some(msg);
        }
    }

    /// io.c's `shutdown_domain` part for one console: dead, unwatched by the caller,
    /// unmapped, event channel closed.
    pub(crate) fn shut_down(&mut self) {
        self.is_dead = true;
        self.unmap();
        self.chan = None;
    }

    /// io.c's `console_evtchn_unmask`: a new period starts; a console that was rate
    /// limited gets its event channel back.
    pub(crate) fn new_period(&mut self, now: Instant) {
        let Some(chan) = &self.chan else { return };
        // io.c allows 5 ms of slack for early wake-ups.
        if now + std::time::Duration::from_millis(5) > self.next_period {
            self.next_period = now + RATE_LIMIT_PERIOD;
            if self.event_count >= RATE_LIMIT_ALLOWANCE {
                let _ = chan.handle.unmask(chan.local);
            }
            self.event_count = 0;
        }
    }

    /// io.c's `handle_ring_read`: one event, one ring's worth of output.
    pub(crate) fn handle_ring_read(&mut self, env: &Env, scratch: &mut [u8; OUT_SIZE]) {
        if self.is_dead {
            return;
        }
        let Some(chan) = &self.chan else { return };
        let port = match chan.handle.pending() {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                self.fail(e.into());
                return;
            }
        };
        if port != chan.local {
            tracing::error!(
                "event received for invalid port {port}, expected port is {}",
                chan.local
            );
            return;
        }
        self.event_count += 1;
        self.buffer_append(env, scratch);
        if let Some(chan) = &self.chan {
            if self.event_count < RATE_LIMIT_ALLOWANCE {
                let _ = chan.handle.unmask(port);
            }
        }
    }

    /// io.c's `buffer_append`: the ring's output to the buffer and the log.
    fn buffer_append(&mut self, env: &Env, scratch: &mut [u8; OUT_SIZE]) {
        let (Some(ring), Some(chan)) = (&self.ring, &self.chan) else {
            return;
        };
        let n = match ring.read(scratch) {
            Ok(0) => return,
            Ok(n) => n,
            Err(source) => {
                let dom = self.domid;
                self.fail(Error::Ring { dom, source });
                return;
            }
        };
        let _ = chan.handle.notify(chan.local);
        // To the log first: with no one on the pty, the pty stops taking output.
        if let Some(log) = &mut self.log {
            if let Err(e) = log.write(&scratch[..n]) {
                tracing::error!(
                    "write to log failed on domain {}: {e} ({})",
                    self.domid,
                    log.path().display()
                );
            }
        }
        self.buffer
            .append(&scratch[..n], env.config.discard_overflowed_data);
    }

    /// Room in the guest's input ring (0 for a broken ring: it is ignored).
    pub(crate) fn ring_free_bytes(&self) -> usize {
        self.ring
            .as_ref()
            .and_then(|r| r.writable_space().ok())
            .unwrap_or(0)
    }

    /// io.c's `handle_tty_read`: from the pty into the guest's input ring. Returns false
    /// when the domain turned out to be gone.
    pub(crate) fn handle_tty_read(&mut self, env: &Env) -> bool {
        if self.is_dead {
            return true;
        }
        let len = self.ring_free_bytes().min(TTY_CHUNK);
        if len == 0 {
            return true;
        }
        let Some(pty) = &self.pty else { return true };
        let mut msg = [0u8; TTY_CHUNK];
        match pty.read(&mut msg[..len]) {
            Ok(n) => {
                if !env.domain_is_valid(self.domid) {
                    self.pty = None;
                    return false;
                }
                if let (Some(ring), Some(chan)) = (&self.ring, &self.chan) {
                    if let Ok(w) = ring.write(&msg[..n]) {
                        if w > 0 {
                            let _ = chan.handle.notify(chan.local);
                        }
                    }
                }
                true
            }
            Err(e) if is_transient(&e) => true,
            Err(_) => self.broken_tty(env),
        }
    }

    /// io.c's `handle_tty_write`: the buffer to the pty.
    pub(crate) fn handle_tty_write(&mut self, env: &Env) -> bool {
        if self.is_dead {
            return true;
        }
        let Some(pty) = &self.pty else { return true };
        match pty.write(self.buffer.pending()) {
            Ok(n) if n > 0 => {
                self.buffer.advance(n);
                true
            }
            Err(e) if is_transient(&e) => true,
            _ => self.broken_tty(env),
        }
    }

    /// io.c's `console_handle_broken_tty`: a new pty if the domain lives; false if not.
    pub(crate) fn broken_tty(&mut self, env: &Env) -> bool {
        self.pty = None;
        if env.domain_is_valid(self.domid) {
            if let Err(e) = self.create_tty(env) {
                self.fail(e);
            }
            true
        } else {
            false
        }
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_the_c_daemon_scans_them() {
        assert_eq!(parse_u64(" 4660\n"), Some(4660));
        assert_eq!(parse_u64("12abc"), None);
        assert_eq!(parse_c_int("0x10"), Some(16));
        assert_eq!(parse_c_int("010"), Some(8));
        assert_eq!(parse_c_int("7"), Some(7));
        assert_eq!(parse_c_int("0"), Some(0));
        assert_eq!(parse_c_int("port"), None);
    }
}
