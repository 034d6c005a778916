//! Pools: the files a host keeps about its pool (`pool.conf`, the inventory, the etcd
//! settings) and, with the `etcd` feature, pool membership: join, eject, the master elected
//! through etcd, and the forwarding of calls to the host that must run them.
//!
//! As XenServer, `pool.conf` in the state folder holds the role, `master` or
//! `slave:<master address>`, and is read at start; the host's own UUID is kept in
//! `xensource-inventory` (`INSTALLATION_UUID`) so a host finds itself among a pool's hosts.

#[cfg(feature = "etcd")]
mod member;

use std::path::Path;

#[cfg(feature = "etcd")]
pub use self::member::{open_pool_db, Member, PoolHooks, ELECTION_TTL};
use crate::Error;

/// The role `pool.conf` records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This host is the pool's master (or alone).
    Master,
    /// This host follows the master at this address.
    Slave(String),
}

impl Role {
    /// Parses `pool.conf`'s text (`master` or `slave:<address>`).
    pub fn parse(text: &str) -> Result<Role, Error> {
        let t = text.trim();
        if t == "master" {
            return Ok(Role::Master);
        }
        match t.strip_prefix("slave:") {
            Some(a) if !a.is_empty() => Ok(Role::Slave(a.to_owned())),
            _ => Err(Error::Corrupt(format!(
                "pool.conf: expected `master` or `slave:<address>`, found {t:?}"
            ))),
        }
    }

    /// Reads `dir/pool.conf`; a missing file means `master` (a host alone).
    pub fn read(dir: &Path) -> Result<Role, Error> {
        let p = dir.join("pool.conf");
        match std::fs::read_to_string(&p) {
            Ok(t) => Role::parse(&t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Role::Master),
            Err(e) => Err(Error::Io(p.display().to_string(), e)),
        }
    }

    /// Writes `dir/pool.conf` (atomically: a crash leaves the old or the new role).
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        let text = match self {
            Role::Master => "master".to_owned(),
            Role::Slave(a) => format!("slave:{a}"),
        };
        write_atomic(&dir.join("pool.conf"), text.as_bytes())
    }
}

fn write_atomic(p: &Path, data: &[u8]) -> Result<(), Error> {
    let mut name = p.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let tmp = p.with_file_name(name);
    std::fs::write(&tmp, data)
        .and_then(|_| std::fs::rename(&tmp, p))
        .map_err(|e| Error::Io(p.display().to_string(), e))
}

/// Where a pool's database is: etcd endpoints and the pool's name (its key prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// `http://host:port` of each etcd member.
    pub endpoints: Vec<String>,
    /// The pool's name: keys live under `/xapi/<name>/`.
    pub pool: String,
}

impl EtcdSettings {
    const FILE: &'static str = "pool.etcd";

    /// Reads `dir/pool.etcd` (`endpoints=a,b,c` and `pool=name` lines), if there is one.
    pub fn read(dir: &Path) -> Result<Option<EtcdSettings>, Error> {
        let p = dir.join(Self::FILE);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Io(p.display().to_string(), e)),
        };
        let mut endpoints = Vec::new();
        let mut pool = None;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match line.split_once('=') {
                Some(("endpoints", v)) => {
                    endpoints = v.split(',').map(|s| s.trim().to_owned()).collect();
                }
                Some(("pool", v)) => pool = Some(v.trim().to_owned()),
                _ => {
                    return Err(Error::Corrupt(format!(
                        "{}: unexpected line {line:?}",
                        p.display()
                    )))
                }
            }
        }
        match pool {
            Some(pool) if !endpoints.is_empty() => Ok(Some(EtcdSettings { endpoints, pool })),
            _ => Err(Error::Corrupt(format!(
                "{}: needs endpoints= and pool=",
                p.display()
            ))),
        }
    }

    /// Writes `dir/pool.etcd`.
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        let text = format!(
            "endpoints={}\npool={}\n",
            self.endpoints.join(","),
            self.pool
        );
        write_atomic(&dir.join(Self::FILE), text.as_bytes())
    }

    /// Removes `dir/pool.etcd` (the host leaves its pool).
    pub fn remove(dir: &Path) -> Result<(), Error> {
        let p = dir.join(Self::FILE);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io(p.display().to_string(), e)),
        }
    }
}

/// This host's UUID from `dir/xensource-inventory` (`INSTALLATION_UUID='…'`), if recorded.
pub fn installation_uuid(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("xensource-inventory")).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix("INSTALLATION_UUID=")
            .map(|v| v.trim().trim_matches('\'').to_owned())
    })
}

/// Records this host's UUID in `dir/xensource-inventory`.
pub fn write_installation_uuid(dir: &Path, uuid: &str) -> Result<(), Error> {
    write_atomic(
        &dir.join("xensource-inventory"),
        format!("INSTALLATION_UUID='{uuid}'\n").as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_conf_roles_round_trip_and_bad_text_is_refused() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Role::read(d.path()).unwrap(), Role::Master);
        Role::Slave("10.0.0.1".into()).write(d.path()).unwrap();
        assert_eq!(
            Role::read(d.path()).unwrap(),
            Role::Slave("10.0.0.1".into())
        );
        for bad in ["", "slave:", "slave", "boss"] {
            assert!(Role::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn etcd_settings_round_trip_and_need_both_lines() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(EtcdSettings::read(d.path()).unwrap(), None);
        let s = EtcdSettings {
            endpoints: vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
            pool: "p".into(),
        };
        s.write(d.path()).unwrap();
        assert_eq!(EtcdSettings::read(d.path()).unwrap(), Some(s));
        std::fs::write(d.path().join("pool.etcd"), "pool=p\n").unwrap();
        assert!(EtcdSettings::read(d.path()).is_err());
        EtcdSettings::remove(d.path()).unwrap();
        assert_eq!(EtcdSettings::read(d.path()).unwrap(), None);
    }

    #[test]
    fn inventory_keeps_the_uuid() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(installation_uuid(d.path()), None);
        write_installation_uuid(d.path(), "abc").unwrap();
        assert_eq!(installation_uuid(d.path()).as_deref(), Some("abc"));
    }
}
