//! Watch domains come and go through xenstore, as a toolstack's monitor does.
//!
//! A toolstack records each domain it creates under `/local/domain/<id>` (libxl's layout and
//! permissions: the directory owned by dom0 and readable by the guest, `data/` owned by the
//! guest); a monitor on another connection keeps a depth-1 watch on `/local/domain` and
//! learns of every domain that appears or goes away without polling. The guest, connected as
//! its own domain id, may write its `data/` and nothing of the toolstack's.
//!
//! Uses only public APIs: `xenctrl` for the domains (on the simulated host here, on a dom0
//! with `Xen::real()`), the `xenstored` library for a daemon in this process, and the
//! `xenstore` client.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

use xen_types::DomId;
use xenctrl::{DomainConfig, Xen};
use xenstore::{Access, Client, Perm, WatchEvent};

/// What the walk-through saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Domains the monitor saw appear, in order.
    pub appeared: Vec<DomId>,
    /// Domains the monitor saw go, in order.
    pub gone: Vec<DomId>,
    /// Guests that could write their own `data/` node.
    pub guest_wrote_data: Vec<DomId>,
    /// Guests refused (`EACCES`) when writing the toolstack's `name` node.
    pub guest_refused_name: Vec<DomId>,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const TOKEN: &str = "domains";

/// Turns the monitor's pending events into appear/go notices, reading the tree to tell which.
fn drain(
    mon: &Client,
    known: &mut BTreeSet<DomId>,
    seen: &mut Seen,
    out: &mut dyn Write,
) -> Result<()> {
    while let Some(WatchEvent { path, token }) =
        mon.next_event_timeout(Duration::from_millis(200))?
    {
        if token != TOKEN {
            continue;
        }
        let Some(id) = path
            .strip_prefix("/local/domain/")
            .and_then(|s| s.parse::<u16>().ok())
            .map(DomId)
        else {
            continue; // the watch's first event names /local/domain itself
        };
        let present = mon.exists(&path)?;
        if present && known.insert(id) {
            let name = mon.read_string(&format!("{path}/name")).unwrap_or_default();
            writeln!(out, "monitor: domain {} appeared ({name})", id.0)?;
            seen.appeared.push(id);
        } else if !present && known.remove(&id) {
            writeln!(out, "monitor: domain {} is gone", id.0)?;
            seen.gone.push(id);
        }
    }
    Ok(())
}

/// Creates `count` domains on `xen`, records them in the xenstore of a daemon started in
/// this process, lets each guest write its `data/`, then destroys them, while a monitor
/// watches. Leaves the host as it found it.
pub fn run(xen: &Xen, count: usize, out: &mut dyn Write) -> Result<Seen> {
    let dir = tempfile::tempdir()?;
    let cfg = xenstored::Config {
        socket_path: dir.path().join("socket"),
        data_dir: None,
        ..xenstored::Config::default()
    };
    let daemon = xenstored::Daemon::new(cfg)?.spawn()?;
    let xs = Client::connect_socket(daemon.socket_path())?;
    let mon = Client::connect_socket(daemon.socket_path())?;
    xs.mkdir("/local/domain")?;
    mon.watch_depth("/local/domain", TOKEN, 1)?;

    let mut seen = Seen::default();
    let mut known = BTreeSet::new();
    let mut doms = Vec::new();
    for i in 0..count {
        let dom = xen.create_domain(&DomainConfig::pv(1))?;
        let path = format!("/local/domain/{}", dom.0);
        // libxl's layout: dom0 owns the directory and the guest may read it; the guest
        // owns data/.
        xs.transaction(|tx| {
            tx.mkdir(&path)?;
            tx.set_perms(
                &path,
                &[
                    Perm::new(DomId::DOM0, Access::None),
                    Perm::new(dom, Access::Read),
                ],
            )?;
            tx.write(&format!("{path}/name"), format!("guest-{i}"))?;
            tx.write(&format!("{path}/domid"), dom.0.to_string())?;
            tx.mkdir(&format!("{path}/data"))?;
            tx.set_perms(&format!("{path}/data"), &[Perm::new(dom, Access::None)])
        })?;
        doms.push(dom);
    }
    drain(&mon, &mut known, &mut seen, out)?;

    for &dom in &doms {
        // The guest's own connection: the daemon treats it as that domain.
        let guest = Client::with_transport(xenstore::FdTransport::from(daemon.connect_as(dom)?))?;
        let path = format!("/local/domain/{}", dom.0);
        guest.write(&format!("{path}/data/ready"), "1")?;
        seen.guest_wrote_data.push(dom);
        match guest.write(&format!("{path}/name"), "renamed") {
            Err(e) if e.errno() == Some(xen_types::Errno(libc::EACCES)) => {
                writeln!(out, "guest {}: may write data/, not name (EACCES)", dom.0)?;
                seen.guest_refused_name.push(dom);
            }
            other => writeln!(out, "guest {}: writing name gave {other:?}", dom.0)?,
        }
    }

    for &dom in &doms {
        xen.destroy(dom)?;
        xs.rm(&format!("/local/domain/{}", dom.0))?;
    }
    drain(&mon, &mut known, &mut seen, out)?;
    Ok(seen)
}
