//! The request engine: XenStore semantics without any I/O.
//!
//! [`Engine::handle`] takes one decoded request from one connection and produces replies
//! and watch events (for any connection) in an [`Outbox`], plus [`Effect`]s for the I/O
//! layer (connect or disconnect a domain's ring). Everything about the protocol lives here:
//! path rules, permissions, transactions, watches, quotas, special nodes. The server and the
//! fuzz target drive the same code.
//!
//! Transactions follow C xenstored 4.17 (`xenstored_transaction.c`): nothing is copied at
//! `TRANSACTION_START`; a node (or its absence) is fetched from the live store into the
//! transaction at the transaction's first access to it (read, write, directory, get-perms,
//! rm, including ancestors walked for permission checks), its generation recorded, and
//! later accesses see the transaction's own copy. At commit, only those accessed nodes are
//! compared with the live store; any change to one of them fails the commit with `EAGAIN`.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use xen_types::{DomId, Errno, EvtchnPort};
use xenstore::wire::{self, Access, Message, Op, PathKind, Perm, TxId, PAYLOAD_MAX};

use crate::tree::{basename, child_path, parent_of, Node, Tree};
use crate::Quotas;

/// A connection handle.
pub type ConnId = u64;

/// Hasher for the engine's own sequential ids (connections, watches): one multiply
/// (Fx), as these keys are never chosen by a client.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A map keyed by an engine-made id.
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Special watch path: a domain was introduced.
pub const INTRODUCE_DOMAIN: &str = "@introduceDomain";
/// Special watch path: a domain was released (or died).
pub const RELEASE_DOMAIN: &str = "@releaseDomain";

/// Something the I/O layer must do after a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Connect to a domain's ring (`INTRODUCE`).
    Introduce {
        /// The domain.
        domid: DomId,
        /// Guest frame of its ring page (the signed decimal of the request).
        gfn: i64,
        /// Its unbound event channel.
        port: EvtchnPort,
    },
    /// Disconnect a domain (`RELEASE`): close its connections.
    Release {
        /// The domain.
        domid: DomId,
    },
}

/// Replies, events and effects of one request.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Messages to send, in order, each to its connection.
    pub msgs: Vec<(ConnId, Message)>,
    /// Effects for the I/O layer.
    pub effects: Vec<Effect>,
}

impl Outbox {
    /// Empties the outbox.
    pub fn clear(&mut self) {
        self.msgs.clear();
        self.effects.clear();
    }
}

#[derive(Debug, Clone, Copy)]
struct Who {
    domid: DomId,
    target: Option<DomId>,
    privileged: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Rights {
    read: bool,
    write: bool,
    owner: bool,
}

fn rights(who: &Who, perms: &[Perm]) -> Rights {
    let mine = |d: DomId| d == who.domid || who.target == Some(d);
    let Some(first) = perms.first() else {
        return Rights {
            read: who.privileged,
            write: who.privileged,
            owner: who.privileged,
        };
    };
    if who.privileged || mine(first.domid) {
        return Rights {
            read: true,
            write: true,
            owner: true,
        };
    }
    let a = perms[1..]
        .iter()
        .find(|p| mine(p.domid))
        .map_or(first.access, |p| p.access);
    Rights {
        read: a.can_read(),
        write: a.can_write(),
        owner: false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Read,
    Write,
    Owner,
}

impl Rights {
    fn has(self, n: Need) -> bool {
        match n {
            Need::Read => self.read,
            Need::Write => self.write,
            Need::Owner => self.write && self.owner,
        }
    }
}

#[derive(Debug, Clone)]
enum Match {
    /// Watches on the path or an ancestor (depth-limited).
    Subtree,
    /// Watches on exactly this path (removed descendants).
    Exact,
    /// Special event: (base, domid).
    Special(&'static str, DomId),
}

#[derive(Debug, Clone)]
struct Event {
    path: Arc<str>,
    kind: Match,
    /// Node as it was (removed nodes) for the permission check.
    node: Option<Arc<Node>>,
    /// Permissions before a SET_PERMS (watchers losing access still hear of it).
    old_perms: Option<Arc<[Perm]>>,
}

#[derive(Debug)]
struct Watch {
    conn: ConnId,
    path: Arc<str>,
    token: Arc<str>,
    depth: Option<u32>,
    rel_prefix: usize,
}

#[derive(Debug, Default)]
struct TxTrack {
    accessed: HashMap<Arc<str>, Option<u64>>,
    written: Vec<Arc<str>>,
    written_set: HashSet<Arc<str>>,
    events: Vec<Event>,
}

#[derive(Debug)]
struct Tx {
    tree: Tree,
    track: TxTrack,
}

#[derive(Debug)]
struct Conn {
    domid: DomId,
    watches: Vec<u64>,
    txs: IdMap<u32, Tx>,
}

#[derive(Debug, Clone)]
struct Domain {
    gfn: i64,
    port: EvtchnPort,
    /// Seen shut down (`@releaseDomain` fired for it); cleared by `RESUME`.
    shutdown: bool,
}

/// One view of the store for one request: the main tree, or a transaction's.
struct View<'a> {
    tree: &'a mut Tree,
    /// In a transaction: the live store, from which a node is fetched into the
    /// transaction's tree at the transaction's first access to it.
    live: Option<&'a Tree>,
    /// Nodes fetched from `live` during this request (re-applied if the request fails).
    fetched: Vec<(Arc<str>, Option<Arc<Node>>)>,
    track: Option<&'a mut TxTrack>,
    dirty: &'a mut Vec<Arc<str>>,
    gen: &'a mut u64,
    who: Who,
    quotas: &'a Quotas,
    events: Vec<Event>,
}

fn over(limit: u64, value: u64) -> bool {
    limit != 0 && value > limit
}

impl View<'_> {
    /// The node at `path` in this view. Inside a transaction, the first access to a path
    /// fetches the node (or its absence) from the live store and records its generation
    /// for the commit-time conflict check, as C xenstored does; later accesses see the
    /// transaction's own copy.
    fn get(&mut self, path: &str) -> Result<Option<Arc<Node>>, Errno> {
        if let (Some(t), Some(live)) = (self.track.as_deref_mut(), self.live) {
            if !t.accessed.contains_key(path) {
                if !self.who.privileged
                    && over(
                        self.quotas.transaction_nodes as u64,
                        t.accessed.len() as u64 + 1,
                    )
                {
                    return Err(Errno::ENOSPC);
                }
                let n = live.get(path).cloned();
                let path: Arc<str> = path.into();
                t.accessed.insert(path.clone(), n.as_ref().map(|n| n.gen));
                let same = match (self.tree.get(&path), &n) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                };
                if !same {
                    self.tree.set_raw(path.clone(), n.clone());
                }
                self.fetched.push((path, n.clone()));
                return Ok(n);
            }
        }
        Ok(self.tree.get(path).cloned())
    }

    fn next_gen(&mut self) -> u64 {
        *self.gen += 1;
        *self.gen
    }

    fn mark(&mut self, path: &Arc<str>) {
        match self.track.as_deref_mut() {
            Some(t) => {
                if t.written_set.insert(path.clone()) {
                    t.written.push(path.clone());
                }
            }
            None => self.dirty.push(path.clone()),
        }
    }

    fn check_size(&self, node: &Node) -> Result<(), Errno> {
        if !self.who.privileged && over(self.quotas.node_size as u64, node.acc_size() as u64) {
            return Err(Errno::ENOSPC);
        }
        Ok(())
    }

    fn put(&mut self, path: Arc<str>, mut node: Node) -> Arc<Node> {
        node.gen = self.next_gen();
        node.created = node.created.min(node.gen);
        let n = Arc::new(node);
        self.mark(&path);
        self.tree.set_raw(path, Some(n.clone()));
        n
    }

    fn del(&mut self, path: Arc<str>) {
        self.mark(&path);
        self.tree.set_raw(path, None);
    }

    fn event(&mut self, path: Arc<str>, kind: Match, node: Option<Arc<Node>>) {
        self.events.push(Event {
            path,
            kind,
            node,
            old_perms: None,
        });
    }

    /// The node at `path` if `need` is granted; `Ok(None)` if it does not exist and its
    /// nearest existing ancestor grants `need` (else `EACCES`, to leak nothing).
    fn get_checked(&mut self, path: &str, need: Need) -> Result<Option<Arc<Node>>, Errno> {
        if let Some(n) = self.get(path)? {
            return if rights(&self.who, &n.perms).has(need) {
                Ok(Some(n))
            } else {
                Err(Errno::EACCES)
            };
        }
        if path.starts_with('@') {
            return Err(Errno::ENOENT);
        }
        let mut p = path;
        while p != "/" {
            p = parent_of(p);
            if let Some(a) = self.get(p)? {
                let need = if need == Need::Owner {
                    Need::Write
                } else {
                    need
                };
                return if rights(&self.who, &a.perms).has(need) {
                    Ok(None)
                } else {
                    Err(Errno::EACCES)
                };
            }
        }
        Err(Errno::EACCES)
    }

    /// Creates `path` (whose nearest existing ancestor the caller may write) and any
    /// missing parents, inheriting permissions; unprivileged creators own what they create.
    fn create(&mut self, path: &str, value: Arc<[u8]>) -> Result<(), Errno> {
        let mut missing = vec![path];
        let mut p = path;
        let mut parent = loop {
            p = parent_of(p);
            match self.get(p)? {
                Some(n) => break n,
                None if p == "/" => return Err(Errno::ENOENT),
                None => missing.push(p),
            }
        };
        let mut parent_path: Arc<str> = p.into();
        if !self.who.privileged {
            let owned = self.tree.owned_by(self.who.domid) as u64;
            if over(self.quotas.nodes as u64, owned + missing.len() as u64) {
                return Err(Errno::ENOSPC);
            }
        }
        for (i, name) in missing.iter().rev().enumerate() {
            let last = i + 1 == missing.len();
            let mut perms: Vec<Perm> = parent.perms.to_vec();
            if !self.who.privileged {
                if let Some(first) = perms.first_mut() {
                    first.domid = self.who.domid;
                }
            }
            let created = self.next_gen();
            let node = Node::new(
                if last {
                    value.clone()
                } else {
                    Arc::from(&[][..])
                },
                perms.into(),
                created,
            );
            self.check_size(&node)?;
            let mut pn = (*parent).clone();
            pn.add_child(basename(name).into(), created);
            self.check_size(&pn)?;
            self.put(parent_path.clone(), pn);
            let path: Arc<str> = (*name).into();
            parent = self.put(path.clone(), node);
            parent_path = path;
        }
        Ok(())
    }

    fn write(&mut self, path: &str, value: &[u8]) -> Result<(), Errno> {
        match self.get_checked(path, Need::Write)? {
            Some(n) => {
                let mut node = (*n).clone();
                node.value = value.into();
                self.check_size(&node)?;
                self.put(path.into(), node);
            }
            None => self.create(path, value.into())?,
        }
        self.event(path.into(), Match::Subtree, None);
        Ok(())
    }

    fn mkdir(&mut self, path: &str) -> Result<(), Errno> {
        if self.get_checked(path, Need::Write)?.is_none() {
            self.create(path, Arc::from(&[][..]))?;
            self.event(path.into(), Match::Subtree, None);
        }
        Ok(())
    }

    fn rm(&mut self, path: &str) -> Result<(), Errno> {
        let Some(node) = self.get_checked(path, Need::Write)? else {
            // Not there: fine if the parent is.
            return match self.get(parent_of(path))? {
                Some(_) => Ok(()),
                None => Err(Errno::ENOENT),
            };
        };
        if path == "/" || path.starts_with('@') {
            return Err(Errno::EINVAL);
        }
        // Depth-first: every descendant, with its node for the watch permission check.
        let mut stack: Vec<(String, Arc<Node>)> = vec![(path.to_string(), node.clone())];
        let mut removed = Vec::new();
        while let Some((p, n)) = stack.pop() {
            for c in n.children() {
                let cp = child_path(&p, c);
                if let Some(cn) = self.get(&cp)? {
                    stack.push((cp, cn));
                }
            }
            removed.push((p, n));
        }
        let parent_path = parent_of(path);
        if let Some(pn) = self.get(parent_path)? {
            let mut pn = (*pn).clone();
            pn.remove_child(basename(path));
            self.put(parent_path.into(), pn);
        }
        for (p, n) in removed {
            let p: Arc<str> = p.into();
            self.del(p.clone());
            if &*p != path {
                self.event(p, Match::Exact, Some(n));
            }
        }
        self.event(path.into(), Match::Subtree, Some(node));
        Ok(())
    }

    fn set_perms(&mut self, path: &str, perms: Vec<Perm>) -> Result<(), Errno> {
        if !self.who.privileged && over(self.quotas.perms as u64, perms.len() as u64) {
            return Err(Errno::ENOSPC);
        }
        let Some(n) = self.get_checked(path, Need::Owner)? else {
            return Err(Errno::ENOENT);
        };
        if !self.who.privileged && perms[0].domid != n.owner() {
            return Err(Errno::EPERM);
        }
        let old = n.perms.clone();
        let mut node = (*n).clone();
        node.perms = perms.into();
        self.check_size(&node)?;
        self.put(path.into(), node);
        self.events.push(Event {
            path: path.into(),
            kind: Match::Subtree,
            node: None,
            old_perms: Some(old),
        });
        Ok(())
    }
}

/// A state of the store to return to: see [`Engine::checkpoint`].
#[derive(Debug, Clone)]
pub struct Checkpoint {
    tree: Tree,
    domains: imbl::OrdMap<DomId, Domain>,
    targets: HashMap<DomId, DomId>,
}

/// The XenStore state machine.
#[derive(Debug)]
pub struct Engine {
    quotas: Quotas,
    keep_orphans: bool,
    tree: Tree,
    gen: u64,
    conns: IdMap<ConnId, Conn>,
    next_conn: ConnId,
    watches: IdMap<u64, Watch>,
    next_watch: u64,
    index: HashMap<Arc<str>, Vec<u64>>,
    domains: imbl::OrdMap<DomId, Domain>,
    targets: HashMap<DomId, DomId>,
    next_tx: u32,
    dirty: Vec<Arc<str>>,
    after_reply: Vec<(ConnId, Message)>,
}

fn onearg(payload: &[u8]) -> Result<&[u8], Errno> {
    match payload.split_last() {
        Some((0, body)) if !body.contains(&0) => Ok(body),
        _ => Err(Errno::EINVAL),
    }
}

fn strings(payload: &[u8]) -> Result<Vec<&[u8]>, Errno> {
    wire::split_strings(payload).map_err(|_| Errno::EINVAL)
}

fn parse_num<T: std::str::FromStr>(s: &[u8]) -> Result<T, Errno> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Errno::EINVAL)
}

/// Permission strings: malformed ones are `EINVAL`; a well-formed one naming a domain id
/// past 16 bits cannot name an existing domain, which C xenstored reports as `ENOENT`.
fn parse_perms(items: &[&[u8]]) -> Result<Vec<Perm>, Errno> {
    let mut v = Vec::with_capacity(items.len());
    for s in items {
        match Perm::parse(s) {
            Ok(p) => v.push(p),
            Err(_) => {
                let digits = s.get(1..).unwrap_or_default();
                let well_formed = matches!(s.first(), Some(b'n' | b'r' | b'w' | b'b'))
                    && !digits.is_empty()
                    && digits.iter().all(u8::is_ascii_digit);
                return Err(if well_formed {
                    Errno::ENOENT
                } else {
                    Errno::EINVAL
                });
            }
        }
    }
    if v.is_empty() {
        return Err(Errno::EINVAL);
    }
    Ok(v)
}

fn parse_domid(s: &[u8]) -> Result<DomId, Errno> {
    parse_num::<u16>(s).map(DomId)
}

/// Length of `path` below a `/local/domain/<id>/` prefix (the whole length otherwise).
fn below_domain_home(path: &str) -> usize {
    if let Some(rest) = path.strip_prefix("/local/domain/") {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if (1..=5).contains(&digits) && rest.as_bytes().get(digits) == Some(&b'/') {
            return rest.len() - digits - 1;
        }
    }
    path.len()
}

/// Does `path` fall under `wpath` within `depth` levels?
fn is_child(path: &str, wpath: &str, depth: Option<u32>) -> bool {
    let rest = if wpath == "/" {
        if !path.starts_with('/') {
            return false;
        }
        &path[1..]
    } else {
        match path.strip_prefix(wpath) {
            Some("") => return true,
            Some(r) if r.starts_with('/') => &r[1..],
            _ => return false,
        }
    };
    match depth {
        None => true,
        Some(d) => rest.is_empty() || rest.split('/').count() as u64 <= d as u64,
    }
}

impl Engine {
    /// An engine with the initial tree (`/`, `/tool/xenstored`, the special nodes), as C
    /// xenstored sets it up.
    pub fn new(quotas: Quotas, keep_orphans: bool) -> Engine {
        let mut e = Engine {
            quotas,
            keep_orphans,
            tree: Tree::empty(),
            gen: 0,
            conns: IdMap::default(),
            next_conn: 1,
            watches: IdMap::default(),
            next_watch: 1,
            index: HashMap::new(),
            domains: imbl::OrdMap::new(),
            targets: HashMap::new(),
            next_tx: 1,
            dirty: Vec::new(),
            after_reply: Vec::new(),
        };
        e.init_tree();
        e
    }

    fn init_tree(&mut self) {
        let n0: Arc<[Perm]> = vec![Perm::new(DomId::DOM0, Access::None)].into();
        for p in [
            "/",
            "/tool",
            "/tool/xenstored",
            INTRODUCE_DOMAIN,
            RELEASE_DOMAIN,
        ] {
            if self.tree.get(p).is_some() {
                continue;
            }
            self.gen += 1;
            let node = Node::new(Arc::from(&[][..]), n0.clone(), self.gen);
            if p != "/" && !p.starts_with('@') {
                let parent = parent_of(p);
                if let Some(pn) = self.tree.get(parent) {
                    let mut pn = (**pn).clone();
                    pn.add_child(basename(p).into(), node.created);
                    self.tree.set_raw(parent.into(), Some(Arc::new(pn)));
                }
            }
            self.tree.set_raw(p.into(), Some(Arc::new(node)));
            self.dirty.push(p.into());
        }
    }

    /// Replaces the store (after loading it from disk); `gen` is the largest generation in it.
    pub fn restore(&mut self, tree: Tree, gen: u64) {
        self.tree = tree;
        self.gen = self.gen.max(gen);
        self.init_tree();
    }

    /// The current (committed) tree.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The largest generation handed out.
    pub fn generation(&self) -> u64 {
        self.gen
    }

    /// Paths of the committed tree changed since the last call (for the journal).
    pub fn take_dirty(&mut self) -> Vec<Arc<str>> {
        std::mem::take(&mut self.dirty)
    }

    /// The store and the introduced domains as they are now (O(1): both are structurally
    /// shared), to return to with [`Engine::rollback`].
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            tree: self.tree.clone(),
            domains: self.domains.clone(),
            targets: self.targets.clone(),
        }
    }

    /// Undoes every change to the store and to the introduced domains since `cp` was taken
    /// (when they could not be made durable). Transactions ended meanwhile stay ended, and
    /// generations are not handed out again.
    pub fn rollback(&mut self, cp: Checkpoint) {
        self.tree = cp.tree;
        self.domains = cp.domains;
        self.targets = cp.targets;
        self.dirty.clear();
    }

    /// Registers a connection from `domid` (dom0 for the unix socket).
    pub fn connect(&mut self, domid: DomId) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                domid,
                watches: Vec::new(),
                txs: IdMap::default(),
            },
        );
        id
    }

    /// Forgets a connection: its watches and open transactions go away.
    pub fn disconnect(&mut self, id: ConnId) {
        if let Some(c) = self.conns.remove(&id) {
            for w in c.watches {
                self.drop_watch(w);
            }
        }
    }

    /// Number of connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Domains introduced (and not released).
    pub fn introduced_domains(&self) -> Vec<DomId> {
        self.domains.keys().copied().collect()
    }

    fn who(&self, conn: ConnId) -> Option<Who> {
        let c = self.conns.get(&conn)?;
        Some(self.who_of(c.domid))
    }

    fn who_of(&self, domid: DomId) -> Who {
        Who {
            domid,
            target: if self.targets.is_empty() {
                None
            } else {
                self.targets.get(&domid).copied()
            },
            privileged: domid.is_dom0(),
        }
    }

    fn canonical<'p>(
        &self,
        who: &Who,
        path: &'p [u8],
        kind: PathKind,
    ) -> Result<Cow<'p, str>, Errno> {
        wire::validate_path(path, kind).map_err(|_| Errno::EINVAL)?;
        // validate_path allows only ASCII.
        let p = std::str::from_utf8(path).map_err(|_| Errno::EINVAL)?;
        let abs = if p.starts_with('/') || p.starts_with('@') {
            Cow::Borrowed(p)
        } else {
            Cow::Owned(format!("/local/domain/{}/{p}", who.domid.0))
        };
        if abs.len() > wire::ABS_PATH_MAX {
            return Err(Errno::EINVAL);
        }
        // As C xenstored: the length below any `/local/domain/<id>/` counts, for every
        // caller, dom0 included.
        if self.quotas.path_max != 0 && below_domain_home(&abs) > self.quotas.path_max {
            return Err(Errno::EINVAL);
        }
        Ok(abs)
    }

    /// Answers a `READ` (header `h`, `payload`) outside a transaction of a node the caller
    /// may read by appending the reply (header and value) to `wire_out`, without building a
    /// [`Message`]: the hot path of a busy store. Returns false, appending nothing, for
    /// anything else (another request, a transaction, an error reply): [`Engine::handle`]
    /// then answers it (a read changes nothing, so the second look is the same).
    pub fn read_into(
        &self,
        conn: ConnId,
        h: &wire::Header,
        payload: &[u8],
        wire_out: &mut Vec<u8>,
    ) -> bool {
        if h.ty != Op::Read.raw() || h.tx_id != TxId::NONE {
            return false;
        }
        let Some(who) = self.who(conn) else {
            return false;
        };
        let Ok(arg) = onearg(payload) else {
            return false;
        };
        let Ok(path) = self.canonical(&who, arg, PathKind::AbsoluteOrRelative) else {
            return false;
        };
        let Some(n) = self.tree.get(&path) else {
            return false;
        };
        if !rights(&who, &n.perms).read || n.value.len() > PAYLOAD_MAX {
            return false;
        }
        let reply = wire::Header {
            len: n.value.len() as u32,
            ..*h
        };
        wire_out.extend_from_slice(&reply.to_bytes());
        wire_out.extend_from_slice(&n.value);
        true
    }

    /// Handles one request from `conn`, appending replies, events and effects to `out`.
    pub fn handle(&mut self, conn: ConnId, req: &Message, out: &mut Outbox) {
        self.after_reply.clear();
        let Some(who) = self.who(conn) else {
            return;
        };
        let h = &req.header;
        let reply = match self.dispatch(conn, who, req, out) {
            Ok(Some(payload)) => Message::reply(h, payload),
            Ok(None) => return,
            Err(e) => Message::error_reply(h, e),
        };
        // Events this request caused were queued before the reply (as C xenstored does);
        // a WATCH's initial event follows its OK.
        out.msgs.push((conn, reply));
        out.msgs.append(&mut self.after_reply);
    }

    fn dispatch(
        &mut self,
        conn: ConnId,
        who: Who,
        req: &Message,
        out: &mut Outbox,
    ) -> Result<Option<Vec<u8>>, Errno> {
        let op = match Op::try_from(req.header.ty) {
            Ok(Op::WatchEvent | Op::Error) | Err(_) => return Err(Errno::ENOSYS),
            Ok(op) => op,
        };
        let privileged_only = matches!(
            op,
            Op::Control
                | Op::Introduce
                | Op::Release
                | Op::IsDomainIntroduced
                | Op::Resume
                | Op::SetTarget
        );
        if privileged_only && !who.privileged {
            return Err(Errno::EACCES);
        }
        let tx = req.header.tx_id;
        let uses_tx = !matches!(op, Op::Watch | Op::Unwatch);
        if uses_tx && tx != TxId::NONE && !self.conns[&conn].txs.contains_key(&tx.0) {
            return Err(Errno::ENOENT);
        }
        let p = &req.payload[..];
        match op {
            Op::Read => {
                let path = self.canonical(&who, onearg(p)?, PathKind::AbsoluteOrRelative)?;
                self.read_view(conn, who, tx, out, |v| {
                    v.get_checked(&path, Need::Read)?
                        .map(|n| n.value.to_vec())
                        .ok_or(Errno::ENOENT)
                })
                .map(Some)
            }
            Op::Directory => {
                let path = self.canonical(&who, onearg(p)?, PathKind::AbsoluteOrRelative)?;
                self.read_view(conn, who, tx, out, |v| {
                    let n = v.get_checked(&path, Need::Read)?.ok_or(Errno::ENOENT)?;
                    Ok(n.children_blob().to_vec())
                })
                .map(Some)
            }
            Op::DirectoryPart => {
                let args = strings(p)?;
                if args.len() != 2 {
                    return Err(Errno::EINVAL);
                }
                let path = self.canonical(&who, args[0], PathKind::AbsoluteOrRelative)?;
                let off: usize = parse_num(args[1])?;
                self.read_view(conn, who, tx, out, |v| {
                    let n = v.get_checked(&path, Need::Read)?.ok_or(Errno::ENOENT)?;
                    Ok(directory_part(&n, off))
                })
                .map(Some)
            }
            Op::GetPerms => {
                let path = self.canonical(&who, onearg(p)?, PathKind::Any)?;
                self.read_view(conn, who, tx, out, |v| {
                    let n = v.get_checked(&path, Need::Read)?.ok_or(Errno::ENOENT)?;
                    let mut r = Vec::new();
                    for perm in n.perms.iter() {
                        r.extend_from_slice(perm.to_string().as_bytes());
                        r.push(0);
                    }
                    Ok(r)
                })
                .map(Some)
            }
            Op::Write => {
                let Some(nul) = p.iter().position(|&b| b == 0) else {
                    return Err(Errno::EINVAL);
                };
                let path = self.canonical(&who, &p[..nul], PathKind::AbsoluteOrRelative)?;
                let value = &p[nul + 1..];
                self.with_view(conn, who, tx, out, |v| v.write(&path, value))?;
                Ok(Some(b"OK\0".to_vec()))
            }
            Op::Mkdir => {
                let path = self.canonical(&who, onearg(p)?, PathKind::AbsoluteOrRelative)?;
                self.with_view(conn, who, tx, out, |v| v.mkdir(&path))?;
                Ok(Some(b"OK\0".to_vec()))
            }
            Op::Rm => {
                let path = self.canonical(&who, onearg(p)?, PathKind::AbsoluteOrRelative)?;
                self.with_view(conn, who, tx, out, |v| v.rm(&path))?;
                Ok(Some(b"OK\0".to_vec()))
            }
            Op::SetPerms => {
                let args = strings(p)?;
                if args.len() < 2 {
                    return Err(Errno::EINVAL);
                }
                let path = self.canonical(&who, args[0], PathKind::Any)?;
                let perms = parse_perms(&args[1..])?;
                self.with_view(conn, who, tx, out, |v| v.set_perms(&path, perms))?;
                Ok(Some(b"OK\0".to_vec()))
            }
            Op::Watch => self.watch(conn, who, p),
            Op::Unwatch => {
                let args = strings(p)?;
                if args.len() != 2 {
                    return Err(Errno::EINVAL);
                }
                let path = self.canonical(&who, args[0], PathKind::Any)?;
                let c = &self.conns[&conn];
                let found = c.watches.iter().copied().find(|w| {
                    let w = &self.watches[w];
                    *w.path == *path && w.token.as_bytes() == args[1]
                });
                let w = found.ok_or(Errno::ENOENT)?;
                self.drop_watch(w);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.watches.retain(|x| *x != w);
                }
                Ok(Some(b"OK\0".to_vec()))
            }
            Op::ResetWatches => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    let ws = std::mem::take(&mut c.watches);
                    c.txs.clear();
                    for w in ws {
                        self.drop_watch(w);
                    }
                }
                Ok(Some(b"OK\0".to_vec()))
            }
            Op::TransactionStart => {
                if tx != TxId::NONE {
                    return Err(Errno::EBUSY);
                }
                let c = &self.conns[&conn];
                if !who.privileged && over(self.quotas.transactions as u64, c.txs.len() as u64 + 1)
                {
                    return Err(Errno::ENOSPC);
                }
                let mut id = self.next_tx;
                while id == 0 || c.txs.contains_key(&id) {
                    id = id.wrapping_add(1);
                }
                self.next_tx = id.wrapping_add(1);
                // O(1) structural copy; each node is re-fetched from the live store at
                // the transaction's first access to it (`View::get`).
                let t = Tx {
                    tree: self.tree.clone(),
                    track: TxTrack::default(),
                };
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.txs.insert(id, t);
                }
                Ok(Some(format!("{id}\0").into_bytes()))
            }
            Op::TransactionEnd => {
                let commit = match onearg(p)? {
                    b"T" => true,
                    b"F" => false,
                    _ => return Err(Errno::EINVAL),
                };
                let t = self
                    .conns
                    .get_mut(&conn)
                    .and_then(|c| c.txs.remove(&tx.0))
                    .ok_or(Errno::ENOENT)?;
                if commit {
                    self.commit(t, out)?;
                }
                Ok(Some(b"OK\0".to_vec()))
            }
            Op::GetDomainPath => {
                let d = parse_domid(onearg(p)?)?;
                Ok(Some(format!("/local/domain/{}\0", d.0).into_bytes()))
            }
            Op::IsDomainIntroduced => {
                let d = parse_domid(onearg(p)?)?;
                let yes = d.is_dom0() || self.domains.contains_key(&d);
                Ok(Some(if yes {
                    b"T\0".to_vec()
                } else {
                    b"F\0".to_vec()
                }))
            }
            Op::Introduce => {
                let args = strings(p)?;
                if args.len() < 3 {
                    return Err(Errno::EINVAL);
                }
                let domid = parse_domid(args[0])?;
                let gfn: i64 = parse_num(args[1])?;
                let port = EvtchnPort(parse_num(args[2])?);
                if !domid.is_ordinary() || domid.is_dom0() || port.0 == 0 {
                    return Err(Errno::EINVAL);
                }
                let fresh = !self.domains.contains_key(&domid);
                let shutdown = self.domains.get(&domid).is_some_and(|d| d.shutdown);
                self.domains.insert(
                    domid,
                    Domain {
                        gfn,
                        port,
                        shutdown,
                    },
                );
                out.effects.push(Effect::Introduce { domid, gfn, port });
                if fresh {
                    self.fire_special(INTRODUCE_DOMAIN, domid, out);
                }
                Ok(Some(b"OK\0".to_vec()))
            }
            Op::Release => {
                let domid = parse_domid(onearg(p)?)?;
                if domid.is_dom0() || !domid.is_ordinary() {
                    return Err(Errno::EINVAL);
                }
                if self.domains.remove(&domid).is_none() {
                    return Err(Errno::ENOENT);
                }
                self.release_domain(domid, out);
                Ok(Some(b"OK\0".to_vec()))
            }
            Op::Resume => {
                let domid = parse_domid(onearg(p)?)?;
                let d = self.domains.get_mut(&domid).ok_or(Errno::ENOENT)?;
                d.shutdown = false;
                Ok(Some(b"OK\0".to_vec()))
            }
            Op::SetTarget => {
                let args = strings(p)?;
                if args.len() != 2 {
                    return Err(Errno::EINVAL);
                }
                let d = parse_domid(args[0])?;
                let t = parse_domid(args[1])?;
                if !d.is_dom0() && !self.domains.contains_key(&d) {
                    return Err(Errno::ENOENT);
                }
                if !t.is_dom0() && !self.domains.contains_key(&t) {
                    return Err(Errno::ENOENT);
                }
                self.targets.insert(d, t);
                Ok(Some(b"OK\0".to_vec()))
            }
            Op::Control => self.control(p).map(Some),
            Op::WatchEvent | Op::Error => Err(Errno::ENOSYS),
        }
    }

    fn control(&self, p: &[u8]) -> Result<Vec<u8>, Errno> {
        let args = strings(p)?;
        let cmd = args.first().copied().unwrap_or(b"");
        let text = match cmd {
            b"check" => "OK".to_string(),
            b"help" => "check\nhelp\nprint\nquota\nstats\n".to_string(),
            b"print" => {
                if let Some(s) = args.get(1) {
                    tracing::info!("{}", String::from_utf8_lossy(s));
                }
                "OK".to_string()
            }
            b"quota" => format!(
                "nodes: {}\nnode-size: {}\nwatches: {}\ntransactions: {}\n\
                 node-permissions: {}\npath-max: {}\ntransaction-nodes: {}\n",
                self.quotas.nodes,
                self.quotas.node_size,
                self.quotas.watches,
                self.quotas.transactions,
                self.quotas.perms,
                self.quotas.path_max,
                self.quotas.transaction_nodes
            ),
            b"stats" => format!(
                "nodes: {}\nconnections: {}\nwatches: {}\ndomains: {}\ngeneration: {}\n",
                self.tree.len(),
                self.conns.len(),
                self.watches.len(),
                self.domains.len(),
                self.gen
            ),
            _ => return Err(Errno::EINVAL),
        };
        let mut v = text.into_bytes();
        v.push(0);
        Ok(v)
    }

    /// Runs `f` on the view of `tx` (the live store for `TxId::NONE`): a failed request
    /// leaves nothing changed; events of a successful one fire (or wait for the commit).
    fn with_view<T>(
        &mut self,
        conn: ConnId,
        who: Who,
        tx: TxId,
        out: &mut Outbox,
        f: impl FnOnce(&mut View<'_>) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        self.view_impl(conn, who, tx, out, true, f)
    }

    /// [`Engine::with_view`] for a request that changes nothing outside a transaction
    /// (reads): the live store needs no undo copy.
    fn read_view<T>(
        &mut self,
        conn: ConnId,
        who: Who,
        tx: TxId,
        out: &mut Outbox,
        f: impl FnOnce(&mut View<'_>) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        self.view_impl(conn, who, tx, out, false, f)
    }

    fn view_impl<T>(
        &mut self,
        conn: ConnId,
        who: Who,
        tx: TxId,
        out: &mut Outbox,
        mutating: bool,
        f: impl FnOnce(&mut View<'_>) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let quotas = self.quotas;
        if tx != TxId::NONE {
            let t = self
                .conns
                .get_mut(&conn)
                .and_then(|c| c.txs.get_mut(&tx.0))
                .ok_or(Errno::ENOENT)?;
            // A failed request inside a transaction leaves no partial change behind.
            let saved_tree = t.tree.clone();
            let saved_written = t.track.written.len();
            let mut junk = Vec::new();
            let mut v = View {
                tree: &mut t.tree,
                live: Some(&self.tree),
                fetched: Vec::new(),
                track: Some(&mut t.track),
                dirty: &mut junk,
                gen: &mut self.gen,
                who,
                quotas: &quotas,
                events: Vec::new(),
            };
            let r = f(&mut v);
            let events = std::mem::take(&mut v.events);
            let fetched = std::mem::take(&mut v.fetched);
            if r.is_ok() {
                t.track.events.extend(events);
            } else {
                // Undo the request's changes but keep what it fetched: those paths stay
                // accessed, so the transaction must keep seeing them as fetched.
                t.tree = saved_tree;
                for (p, n) in fetched {
                    t.tree.set_raw(p, n);
                }
                for p in t.track.written.drain(saved_written..) {
                    t.track.written_set.remove(&p);
                }
            }
            return r;
        }
        let saved = mutating.then(|| self.tree.clone());
        let dirty_len = self.dirty.len();
        let mut v = View {
            tree: &mut self.tree,
            live: None,
            fetched: Vec::new(),
            track: None,
            dirty: &mut self.dirty,
            gen: &mut self.gen,
            who,
            quotas: &quotas,
            events: Vec::new(),
        };
        let r = f(&mut v);
        let events = std::mem::take(&mut v.events);
        match r {
            Ok(_) => {
                for e in &events {
                    self.fire(e, out);
                }
            }
            Err(_) => {
                if let Some(saved) = saved {
                    self.tree = saved;
                }
                self.dirty.truncate(dirty_len);
            }
        }
        r
    }

    fn commit(&mut self, t: Tx, out: &mut Outbox) -> Result<(), Errno> {
        for (p, g) in &t.track.accessed {
            if self.tree.get(p).map(|n| n.gen) != *g {
                return Err(Errno::EAGAIN);
            }
        }
        // Unprivileged quotas may have been used up by others meanwhile: re-check nodes.
        for p in &t.track.written {
            match t.tree.get(p) {
                Some(n) => {
                    self.gen += 1;
                    let mut n = (**n).clone();
                    n.gen = self.gen;
                    self.tree.set_raw(p.clone(), Some(Arc::new(n)));
                }
                None => self.tree.set_raw(p.clone(), None),
            }
            self.dirty.push(p.clone());
        }
        for e in &t.track.events {
            self.fire(e, out);
        }
        Ok(())
    }

    fn watch(&mut self, conn: ConnId, who: Who, p: &[u8]) -> Result<Option<Vec<u8>>, Errno> {
        let args = strings(p)?;
        let depth = match args.len() {
            2 => None,
            3 => Some(parse_num::<u32>(args[2])?),
            _ => return Err(Errno::EINVAL),
        };
        let path = self.canonical(&who, args[0], PathKind::Any)?;
        let relative = !args[0].starts_with(b"/") && !args[0].starts_with(b"@");
        let token = std::str::from_utf8(args[1]).map_err(|_| Errno::EINVAL)?;
        let c = &self.conns[&conn];
        if c.watches.iter().any(|w| {
            let w = &self.watches[w];
            *w.path == *path && &*w.token == token
        }) {
            return Err(Errno::EEXIST);
        }
        if !who.privileged && over(self.quotas.watches as u64, c.watches.len() as u64 + 1) {
            return Err(Errno::E2BIG);
        }
        let id = self.next_watch;
        self.next_watch += 1;
        let path: Arc<str> = path.into();
        let rel_prefix = if relative {
            format!("/local/domain/{}/", who.domid.0).len()
        } else {
            0
        };
        let w = Watch {
            conn,
            path: path.clone(),
            token: token.into(),
            depth,
            rel_prefix,
        };
        // Fire once up front, after the OK reply (handle() moves it behind the reply).
        if let Ok(ev) = Message::watch_event(&path.as_bytes()[rel_prefix..], w.token.as_bytes()) {
            self.after_reply.push((conn, ev));
        }
        self.watches.insert(id, w);
        self.index.entry(path).or_default().push(id);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.watches.push(id);
        }
        Ok(Some(b"OK\0".to_vec()))
    }

    fn drop_watch(&mut self, id: u64) {
        if let Some(w) = self.watches.remove(&id) {
            if let Some(v) = self.index.get_mut(&w.path) {
                v.retain(|x| *x != id);
                if v.is_empty() {
                    self.index.remove(&w.path);
                }
            }
        }
    }

    fn permitted(&self, who: &Who, e: &Event) -> bool {
        if who.privileged {
            return true;
        }
        if let Match::Special(base, _) = e.kind {
            return self
                .tree
                .get(base)
                .is_some_and(|n| rights(who, &n.perms).read);
        }
        if let Some(old) = &e.old_perms {
            if rights(who, old).read {
                return true;
            }
        }
        let node = e.node.as_ref().or_else(|| self.tree.get(&e.path));
        let Some(node) = node else {
            return false;
        };
        if rights(who, &node.perms).read {
            return true;
        }
        self.tree
            .get(parent_of(&e.path))
            .is_some_and(|p| rights(who, &p.perms).read)
    }

    fn send_event(&self, wid: &u64, path: &str, e: &Event, out: &mut Outbox) {
        if let Some(w) = self.watches.get(wid) {
            self.send_event_to(w, path, e, out);
        }
    }

    fn send_event_to(&self, w: &Watch, path: &str, e: &Event, out: &mut Outbox) {
        let Some(who) = self.who(w.conn) else {
            return;
        };
        if !self.permitted(&who, e) {
            return;
        }
        let shown = path.get(w.rel_prefix..).unwrap_or(path);
        if let Ok(m) = Message::watch_event(shown.as_bytes(), w.token.as_bytes()) {
            out.msgs.push((w.conn, m));
        }
    }

    fn fire(&self, e: &Event, out: &mut Outbox) {
        match &e.kind {
            Match::Exact => {
                for wid in self.index.get(&e.path).into_iter().flatten() {
                    self.send_event(wid, &e.path, e, out);
                }
            }
            Match::Subtree => {
                let path: &str = &e.path;
                let mut prefixes: Vec<&str> = vec!["/"];
                for (i, c) in path.char_indices().skip(1) {
                    if c == '/' {
                        prefixes.push(&path[..i]);
                    }
                }
                if path != "/" {
                    prefixes.push(path);
                }
                for pre in prefixes {
                    for wid in self.index.get(pre).into_iter().flatten() {
                        let w = &self.watches[wid];
                        if is_child(path, &w.path, w.depth) {
                            self.send_event_to(w, path, e, out);
                        }
                    }
                }
            }
            Match::Special(base, domid) => {
                let with_id = format!("{base}/{}", domid.0);
                for wid in self.index.get(*base).into_iter().flatten() {
                    let w = &self.watches[wid];
                    match w.depth {
                        None => self.send_event_to(w, base, e, out),
                        Some(d) if d >= 1 => self.send_event_to(w, &with_id, e, out),
                        Some(_) => {}
                    }
                }
                for wid in self.index.get(with_id.as_str()).into_iter().flatten() {
                    self.send_event(wid, &with_id, e, out);
                }
            }
        }
    }

    fn fire_special(&self, base: &'static str, domid: DomId, out: &mut Outbox) {
        let e = Event {
            path: base.into(),
            kind: Match::Special(base, domid),
            node: None,
            old_perms: None,
        };
        self.fire(&e, out);
    }

    fn release_domain(&mut self, domid: DomId, out: &mut Outbox) {
        out.effects.push(Effect::Release { domid });
        self.targets.remove(&domid);
        self.targets.retain(|_, t| *t != domid);
        // Nodes owned by the domain go away with it (or pass to dom0 with keep_orphans).
        let mut owned: Vec<Arc<str>> = self
            .tree
            .iter()
            .filter(|(p, n)| !p.starts_with('@') && n.owner() == domid)
            .map(|(p, _)| p.clone())
            .collect();
        // Ancestors first: a removed subtree fires once for its top, as in C xenstored.
        owned.sort_by_key(|p| (p.len(), p.clone()));
        let dom0 = Who {
            domid: DomId::DOM0,
            target: None,
            privileged: true,
        };
        let quotas = self.quotas;
        for p in owned {
            if self.tree.get(&p).is_none() {
                continue; // removed with an ancestor
            }
            let mut v = View {
                tree: &mut self.tree,
                live: None,
                fetched: Vec::new(),
                track: None,
                dirty: &mut self.dirty,
                gen: &mut self.gen,
                who: dom0,
                quotas: &quotas,
                events: Vec::new(),
            };
            let r = if self.keep_orphans {
                let n = v.tree.get(&p).cloned();
                match n {
                    Some(n) => {
                        let mut perms = n.perms.to_vec();
                        perms[0].domid = DomId::DOM0;
                        v.set_perms(&p, perms)
                    }
                    None => Ok(()),
                }
            } else {
                v.rm(&p)
            };
            let events = std::mem::take(&mut v.events);
            if r.is_ok() {
                for e in &events {
                    self.fire(e, out);
                }
            }
        }
        self.fire_special(RELEASE_DOMAIN, domid, out);
    }

    /// An introduced domain shut down (or crashed) but is not dead yet: fires
    /// `@releaseDomain` (and `@releaseDomain/<domid>`) once, as C xenstored does, so
    /// toolstacks waiting for it learn of it; `RESUME` re-arms it.
    pub fn domain_shutdown(&mut self, domid: DomId, out: &mut Outbox) {
        if let Some(d) = self.domains.get_mut(&domid) {
            if !d.shutdown {
                d.shutdown = true;
                self.fire_special(RELEASE_DOMAIN, domid, out);
            }
        }
    }

    /// A domain died or its ring failed: release it as `RELEASE` would.
    pub fn domain_gone(&mut self, domid: DomId, out: &mut Outbox) {
        if self.domains.remove(&domid).is_some() {
            self.release_domain(domid, out);
        }
    }

    /// Ring parameters of an introduced domain.
    pub fn domain_ring(&self, domid: DomId) -> Option<(i64, EvtchnPort)> {
        self.domains.get(&domid).map(|d| (d.gfn, d.port))
    }
}

fn directory_part(n: &Node, off: usize) -> Vec<u8> {
    let blob = n.children_blob();
    let mut r = format!("{}\0", n.gen).into_bytes();
    if off >= blob.len() {
        r.push(0);
        return r;
    }
    let maxlen = PAYLOAD_MAX - r.len() - 1;
    let rest = &blob[off..];
    let mut len = 0;
    for name in rest.split_inclusive(|&b| b == 0) {
        if len + name.len() > maxlen {
            break;
        }
        len += name.len();
    }
    r.extend_from_slice(&rest[..len]);
    if len == rest.len() {
        r.push(0);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: Op, tx: TxId, parts: &[&[u8]]) -> Message {
        Message::request(op, 7, tx, parts, op == Op::Write).unwrap()
    }

    /// The reply `handle` gives to `conn`'s request (the last message to `conn`).
    fn handled(e: &mut Engine, conn: ConnId, m: &Message) -> Message {
        let mut out = Outbox::default();
        e.handle(conn, m, &mut out);
        out.msgs
            .into_iter()
            .rev()
            .find(|(c, _)| *c == conn)
            .unwrap()
            .1
    }

    #[test]
    fn read_fast_path_answers_as_handle_or_declines() {
        let mut e = Engine::new(Quotas::default(), false);
        let dom0 = e.connect(DomId::DOM0);
        let guest = e.connect(DomId(5));
        for (path, value) in [
            (&b"/a"[..], &b"va"[..]),
            (b"/local/domain/5/x", b"vx"),
            (b"/secret", b"s"),
            (b"/empty", b""),
        ] {
            let r = handled(&mut e, dom0, &req(Op::Write, TxId::NONE, &[path, value]));
            assert_eq!(r.header.ty, Op::Write.raw());
        }
        let r = handled(
            &mut e,
            dom0,
            &req(Op::SetPerms, TxId::NONE, &[b"/local/domain/5/x", b"b5"]),
        );
        assert_eq!(r.header.ty, Op::SetPerms.raw());
        let r = handled(
            &mut e,
            guest,
            &req(Op::TransactionStart, TxId::NONE, &[b""]),
        );
        let tx = TxId(parse_num(onearg(&r.payload).unwrap()).unwrap());
        let cases: [(ConnId, Message, bool); 9] = [
            (dom0, req(Op::Read, TxId::NONE, &[b"/a"]), true),
            (dom0, req(Op::Read, TxId::NONE, &[b"/empty"]), true),
            (guest, req(Op::Read, TxId::NONE, &[b"x"]), true),
            (
                guest,
                req(Op::Read, TxId::NONE, &[b"/local/domain/5/x"]),
                true,
            ),
            // Declined: permission denied, missing, bad path, transaction, other ops.
            (guest, req(Op::Read, TxId::NONE, &[b"/secret"]), false),
            (dom0, req(Op::Read, TxId::NONE, &[b"/missing"]), false),
            (dom0, req(Op::Read, TxId::NONE, &[b"/bad//path"]), false),
            (guest, req(Op::Read, tx, &[b"x"]), false),
            (dom0, req(Op::Directory, TxId::NONE, &[b"/"]), false),
        ];
        for (conn, m, fast) in cases {
            let mut wire_out = Vec::new();
            assert_eq!(
                e.read_into(conn, &m.header, &m.payload, &mut wire_out),
                fast,
                "{m:?}"
            );
            let slow = handled(&mut e, conn, &m);
            if fast {
                assert_eq!(wire_out, slow.to_bytes(), "{m:?}");
            } else {
                assert!(wire_out.is_empty());
            }
        }
    }

    #[test]
    fn child_matching_with_depth() {
        assert!(is_child("/a/b", "/a", None));
        assert!(is_child("/a", "/a", Some(0)));
        assert!(!is_child("/a/b", "/a", Some(0)));
        assert!(is_child("/a/b", "/a", Some(1)));
        assert!(!is_child("/a/b/c", "/a", Some(1)));
        assert!(!is_child("/ab", "/a", None));
        assert!(is_child("/x", "/", Some(1)));
        assert!(!is_child("/x/y", "/", Some(1)));
        assert!(is_child("/", "/", Some(0)));
    }

    #[test]
    fn rights_follow_owner_acl_and_target() {
        let perms = [
            Perm::new(DomId(1), Access::Read),
            Perm::new(DomId(2), Access::Write),
            Perm::new(DomId(3), Access::None),
        ];
        let w = |d, t| Who {
            domid: DomId(d),
            target: t,
            privileged: d == 0,
        };
        assert!(rights(&w(0, None), &perms).owner);
        assert!(rights(&w(1, None), &perms).owner);
        let r2 = rights(&w(2, None), &perms);
        assert!(r2.write && !r2.read && !r2.owner);
        assert!(!rights(&w(3, None), &perms).read);
        assert!(rights(&w(4, None), &perms).read);
        assert!(rights(&w(5, Some(DomId(1))), &perms).owner);
    }
}
