//! The node tree: a persistent (structurally shared) map from absolute path to node.
//!
//! Cloning a [`Tree`] is O(1), so a transaction's snapshot costs nothing up front and a
//! change copies only the touched map paths (O(log n)). Children are kept per node in
//! persistent maps, in creation order as C xenstored lists them (ordered by the child's
//! creation generation, which is persisted); the `DIRECTORY` payload (names, NUL-terminated)
//! is built once per node version and cached, so listing 10,000 children repeatedly, or
//! paging through them with `DIRECTORY_PART`, is a copy.

use std::sync::{Arc, OnceLock};

use imbl::{HashMap, OrdMap};
use xen_types::DomId;
use xenstore::wire::Perm;

/// One node.
#[derive(Debug, Clone)]
pub struct Node {
    /// Value (binary).
    pub value: Arc<[u8]>,
    /// Permissions, owner first.
    pub perms: Arc<[Perm]>,
    /// Generation: a number that changes whenever the node (value, perms, child list) does.
    pub gen: u64,
    /// The generation at which the node was created: orders it among its siblings.
    pub created: u64,
    children: OrdMap<u64, Arc<str>>,
    child_index: HashMap<Arc<str>, u64>,
    children_len: usize,
    blob: OnceLock<Arc<[u8]>>,
}

impl Node {
    /// A node without children.
    pub fn new(value: Arc<[u8]>, perms: Arc<[Perm]>, gen: u64) -> Node {
        Node {
            value,
            perms,
            gen,
            created: gen,
            children: OrdMap::new(),
            child_index: HashMap::new(),
            children_len: 0,
            blob: OnceLock::new(),
        }
    }

    /// The owner (first permission entry).
    pub fn owner(&self) -> DomId {
        self.perms.first().map_or(DomId::DOM0, |p| p.domid)
    }

    /// Child names, in creation order.
    pub fn children(&self) -> impl Iterator<Item = &Arc<str>> {
        self.children.values()
    }

    /// Number of children.
    pub fn child_count(&self) -> usize {
        self.children.len()
    }

    /// Bytes of the child list on the wire (each name plus its NUL).
    pub fn children_len(&self) -> usize {
        self.children_len
    }

    /// The child list as the `DIRECTORY` payload (cached).
    pub fn children_blob(&self) -> &Arc<[u8]> {
        self.blob.get_or_init(|| {
            let mut v = Vec::with_capacity(self.children_len);
            for c in self.children.values() {
                v.extend_from_slice(c.as_bytes());
                v.push(0);
            }
            v.into()
        })
    }

    /// Adds a child name; `created` is the child's creation generation (its place in the
    /// list).
    pub fn add_child(&mut self, name: Arc<str>, created: u64) {
        if self.child_index.contains_key(&name) {
            return;
        }
        self.children_len += name.len() + 1;
        self.child_index.insert(name.clone(), created);
        self.children.insert(created, name);
        self.blob = OnceLock::new();
    }

    /// Removes a child name.
    pub fn remove_child(&mut self, name: &str) {
        if let Some(created) = self.child_index.remove(name) {
            self.children.remove(&created);
            self.children_len -= name.len() + 1;
        }
        self.blob = OnceLock::new();
    }

    /// Accounted size, as C xenstored computes it for the node-size quota: header, 8 bytes
    /// per permission, value and child list.
    pub fn acc_size(&self) -> usize {
        16 + 8 * self.perms.len() + self.value.len() + self.children_len
    }
}

/// The parent of an absolute path (`/` for top-level nodes and for `/`).
pub fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The last component of an absolute path.
pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

/// Joins a parent path and a child name.
pub fn child_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// The node map's hasher: aHash, keyed with a random seed per process as the standard
/// library's SipHash is (paths are chosen by clients, guests among them), at a fraction of
/// SipHash's cost on short keys: every request hashes its path.
type PathHasher = ahash::RandomState;

/// The whole store.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    nodes:
        imbl::GenericHashMap<Arc<str>, Arc<Node>, PathHasher, imbl::shared_ptr::DefaultSharedPtr>,
    counts: HashMap<DomId, u32>,
}

impl Tree {
    /// An empty tree (not even `/`).
    pub fn empty() -> Tree {
        Tree::default()
    }

    /// The node at `path`.
    pub fn get(&self, path: &str) -> Option<&Arc<Node>> {
        self.nodes.get(path)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Nodes owned by `domid`.
    pub fn owned_by(&self, domid: DomId) -> u32 {
        self.counts.get(&domid).copied().unwrap_or(0)
    }

    /// Sets (`Some`) or removes (`None`) the single node at `path`, keeping owner counts.
    /// Does not touch parents or children.
    pub fn set_raw(&mut self, path: Arc<str>, node: Option<Arc<Node>>) {
        let old = match node {
            Some(n) => {
                let owner = n.owner();
                *self.counts.entry(owner).or_insert(0) += 1;
                self.nodes.insert(path, n)
            }
            None => self.nodes.remove(&path),
        };
        if let Some(o) = old {
            let owner = o.owner();
            if let Some(c) = self.counts.get_mut(&owner) {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    self.counts.remove(&owner);
                }
            }
        }
    }

    /// All paths and nodes (unordered).
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<Node>)> {
        self.nodes.iter()
    }

    /// Rebuilds every node's child list from the set of paths (after loading from disk).
    pub fn rebuild_children(&mut self) {
        let paths: Vec<(Arc<str>, u64)> = self
            .nodes
            .iter()
            .map(|(p, n)| (p.clone(), n.created))
            .collect();
        for (p, created) in paths {
            if p.starts_with('@') || &*p == "/" {
                continue;
            }
            let parent = parent_of(&p);
            if let Some(pn) = self.nodes.get_mut(parent) {
                Arc::make_mut(pn).add_child(basename(&p).into(), created);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use xenstore::wire::Access;

    use super::*;

    #[test]
    fn paths() {
        assert_eq!(parent_of("/a/b"), "/a");
        assert_eq!(parent_of("/a"), "/");
        assert_eq!(parent_of("/"), "/");
        assert_eq!(basename("/a/bc"), "bc");
        assert_eq!(child_path("/", "x"), "/x");
        assert_eq!(child_path("/a", "x"), "/a/x");
    }

    #[test]
    fn snapshots_are_independent_and_counts_follow_owners() {
        let perms: Arc<[Perm]> = vec![Perm::new(DomId(3), Access::None)].into();
        let mut t = Tree::empty();
        t.set_raw(
            "/a".into(),
            Some(Arc::new(Node::new(b"x"[..].into(), perms, 1))),
        );
        let snap = t.clone();
        t.set_raw("/a".into(), None);
        assert!(t.get("/a").is_none());
        assert_eq!(&*snap.get("/a").unwrap().value, b"x");
        assert_eq!(t.owned_by(DomId(3)), 0);
        assert_eq!(snap.owned_by(DomId(3)), 1);
    }

    #[test]
    fn children_blob_is_cached_and_invalidated() {
        let mut n = Node::new(Arc::from(&b""[..]), Arc::from(vec![]), 0);
        n.add_child("b".into(), 5);
        n.add_child("a".into(), 9);
        n.add_child("b".into(), 12);
        // Creation order, not name order.
        assert_eq!(&**n.children_blob(), b"b\0a\0");
        n.remove_child("b");
        assert_eq!(&**n.children_blob(), b"a\0");
        assert_eq!(n.children_len(), 2);
    }
}
