//! XenStore directory conventions of split devices (`docs/misc/xenstore-paths.pandoc`).

use xen_types::DomId;

/// Key in a backend directory naming the frontend's directory.
pub const KEY_FRONTEND: &str = "frontend";
/// Key in a frontend directory naming the backend's directory.
pub const KEY_BACKEND: &str = "backend";
/// Key in a backend directory: the frontend's domain id.
pub const KEY_FRONTEND_ID: &str = "frontend-id";
/// Key in a frontend directory: the backend's domain id.
pub const KEY_BACKEND_ID: &str = "backend-id";
/// Key holding a [`crate::XenbusState`] in either directory.
pub const KEY_STATE: &str = "state";
/// Backend key: `1` while the toolstack wants the device, `0` to unplug it.
pub const KEY_ONLINE: &str = "online";
/// Backend key written by the hotplug step (`connected` or an error).
pub const KEY_HOTPLUG_STATUS: &str = "hotplug-status";

/// `/local/domain/<domid>`.
pub fn domain_path(domid: DomId) -> String {
    format!("/local/domain/{}", domid.get())
}

/// `/local/domain/<backend>/backend/<type>`: the directory a backend driver watches.
pub fn backend_root(backend: DomId, dev_type: &str) -> String {
    format!("{}/backend/{dev_type}", domain_path(backend))
}

/// `/local/domain/<backend>/backend/<type>/<frontend>/<devid>`.
pub fn backend_path(backend: DomId, dev_type: &str, frontend: DomId, devid: u32) -> String {
    format!(
        "{}/{}/{devid}",
        backend_root(backend, dev_type),
        frontend.get()
    )
}

/// `/local/domain/<frontend>/device/<type>/<devid>`.
pub fn frontend_path(frontend: DomId, dev_type: &str, devid: u32) -> String {
    format!("{}/device/{dev_type}/{devid}", domain_path(frontend))
}

/// `<dir>/<key>`.
pub fn join(dir: &str, key: &str) -> String {
    format!("{dir}/{key}")
}

/// A device named by a backend path: `(frontend domid, devid)` when `path` is
/// `<root>/<frontend>/<devid>` or below, where `root` is [`backend_root`].
pub fn parse_backend_device(root: &str, path: &str) -> Option<(DomId, u32)> {
    let rest = path.strip_prefix(root)?.strip_prefix('/')?;
    let mut it = rest.split('/');
    let dom: u16 = it.next()?.parse().ok()?;
    let devid: u32 = it.next()?.parse().ok()?;
    Some((DomId(dom), devid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_conventions() {
        assert_eq!(
            backend_path(DomId(0), "vbd", DomId(5), 51712),
            "/local/domain/0/backend/vbd/5/51712"
        );
        assert_eq!(
            frontend_path(DomId(5), "vbd", 51712),
            "/local/domain/5/device/vbd/51712"
        );
        let root = backend_root(DomId(0), "vbd");
        assert_eq!(
            parse_backend_device(&root, "/local/domain/0/backend/vbd/5/51712/state"),
            Some((DomId(5), 51712))
        );
        assert_eq!(
            parse_backend_device(&root, "/local/domain/0/backend/vbd/5"),
            None
        );
        assert_eq!(
            parse_backend_device(&root, "/local/domain/0/backend/vbdx/5/1"),
            None
        );
        assert_eq!(
            parse_backend_device(&root, "/local/domain/0/backend/vbd/x/1"),
            None
        );
    }
}
