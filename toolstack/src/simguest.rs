//! The guests' side of the simulated host, in one place.
//!
//! Nobody runs inside `xen-sim`'s domains, so this plays what a PV Linux guest does that the
//! toolstack relies on, and nothing more, through the guest's own xenstore connection (as its
//! domain id where the daemon allows it, so xenstored enforces the guest's permissions): it
//! watches `control/shutdown`, and when asked clears the node (as Linux's xenbus shutdown
//! handler does) and shuts its domain down with the reason asked for (`SCHEDOP_shutdown`).
//! A paused guest does nothing until it is unpaused. Tests choose how guests answer with
//! [`SimGuests::set_answer`], and make a guest stop on its own with
//! [`SimGuests::shut_down_on_its_own`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use xen_types::DomId;
use xenctrl::Xen;
use xenstore::Client;

use crate::backend::ShutdownReason;
use crate::Error;

/// How simulated guests answer a `control/shutdown` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownAnswer {
    /// At once.
    Honour,
    /// After this long (as a guest that takes time to stop its services).
    After(Duration),
    /// Never (a hung or uncooperative guest).
    Ignore,
}

/// Opens a xenstore connection for a guest.
pub type Connect = Box<dyn Fn(DomId) -> xenstore::Result<Client> + Send + Sync>;

struct Guest {
    client: Arc<Client>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The simulated guests of a host.
pub struct SimGuests {
    xen: Arc<Xen>,
    connect: Connect,
    answer: Arc<Mutex<ShutdownAnswer>>,
    guests: Mutex<HashMap<DomId, Guest>>,
}

impl std::fmt::Debug for SimGuests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimGuests")
            .field("answer", &*self.answer.lock())
            .field("guests", &self.guests.lock().len())
            .finish_non_exhaustive()
    }
}

impl SimGuests {
    pub(crate) fn new(xen: Arc<Xen>, connect: Connect) -> Self {
        SimGuests {
            xen,
            connect,
            answer: Arc::new(Mutex::new(ShutdownAnswer::Honour)),
            guests: Mutex::new(HashMap::new()),
        }
    }

    /// Sets how guests answer shutdown requests from now on.
    pub fn set_answer(&self, a: ShutdownAnswer) {
        *self.answer.lock() = a;
    }

    /// The guest's own xenstore connection (what the guest may read and write).
    pub fn xenstore(&self, domid: DomId) -> Option<Arc<Client>> {
        self.guests.lock().get(&domid).map(|g| g.client.clone())
    }

    /// The guest stops by itself (`SCHEDOP_shutdown` from inside: it powered off, rebooted
    /// or crashed).
    pub fn shut_down_on_its_own(&self, domid: DomId, reason: ShutdownReason) -> Result<(), Error> {
        Ok(self.xen.shutdown(domid, reason.to_xen())?)
    }

    /// Starts playing the guest of `domid` (its xenstore directories exist).
    pub(crate) fn boot(&self, domid: DomId) -> Result<(), Error> {
        let client = Arc::new((self.connect)(domid)?);
        let path = format!("{}/control/shutdown", xenbus::paths::domain_path(domid));
        client.watch(&path, "shutdown")?;
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s, xen, answer) = (
            client.clone(),
            stop.clone(),
            self.xen.clone(),
            self.answer.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("sim-guest-{}", domid.0))
            .spawn(move || play(domid, &path, &c, &s, &xen, &answer))
            .map_err(|e| Error::Io("spawning a simulated guest".into(), e))?;
        if let Some(old) = self.guests.lock().insert(
            domid,
            Guest {
                client,
                stop,
                thread: Some(thread),
            },
        ) {
            old.stop();
        }
        Ok(())
    }

    /// Stops playing the guest of `domid` (its domain is being destroyed).
    pub(crate) fn gone(&self, domid: DomId) {
        let g = self.guests.lock().remove(&domid);
        if let Some(g) = g {
            g.stop();
        }
    }
}

impl Guest {
    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SimGuests {
    fn drop(&mut self) {
        for (_, g) in self.guests.lock().drain() {
            g.stop();
        }
    }
}

/// The guest's loop: notice a shutdown request, act on it when due and while running.
fn play(
    domid: DomId,
    path: &str,
    client: &Client,
    stop: &AtomicBool,
    xen: &Xen,
    answer: &Mutex<ShutdownAnswer>,
) {
    let mut pending: Option<(ShutdownReason, Instant)> = None;
    while !stop.load(Ordering::Relaxed) {
        match client.next_event_timeout(Duration::from_millis(20)) {
            Ok(Some(_)) if pending.is_none() => {
                pending = client
                    .read_string(path)
                    .ok()
                    .and_then(|w| ShutdownReason::from_control_word(&w))
                    .map(|r| (r, Instant::now()));
            }
            Ok(_) => {}
            Err(_) => return,
        }
        let Some((reason, since)) = pending else {
            continue;
        };
        let due = match *answer.lock() {
            ShutdownAnswer::Honour => true,
            ShutdownAnswer::After(d) => since.elapsed() >= d,
            ShutdownAnswer::Ignore => false,
        };
        match xen.domain_info(domid) {
            Ok(i) if i.is_shutdown() || i.dying() => return,
            Ok(i) if !due || i.paused() => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        // As Linux: acknowledge by clearing the request, then shut down.
        let _ = client.write(path, "");
        let _ = xen.shutdown(domid, reason.to_xen());
        return;
    }
}
