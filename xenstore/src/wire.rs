//! The XenStore wire format (`xen/io/xs_wire.h`, `docs/misc/xenstore.txt`).
//!
//! Every message in either direction is a 16-byte [`Header`] (`struct xsd_sockmsg`: type,
//! request id, transaction id, payload length, native-endian `u32`s) followed by at most
//! [`PAYLOAD_MAX`] bytes of payload. This module encodes and decodes messages, validates
//! paths and permission strings, maps errno names, and provides an incremental [`Decoder`]
//! for byte streams that never panics on hostile input.
//!
//! ```
//! use xenstore::wire::{Decoder, Message, Op, TxId};
//!
//! // WRITE's value is the unterminated last part.
//! let msg = Message::request(Op::Write, 7, TxId::NONE, &[b"/a", b"hello"], true).unwrap();
//! let bytes = msg.to_bytes();
//! let mut dec = Decoder::new();
//! // Feed it a byte at a time: partial headers and payloads are fine.
//! let mut out = Vec::new();
//! for b in &bytes {
//!     dec.feed(std::slice::from_ref(b));
//!     while let Some(m) = dec.next_message().unwrap() {
//!         out.push(m);
//!     }
//! }
//! assert_eq!(out, vec![msg]);
//! assert_eq!(out[0].payload, b"/a\0hello");
//! ```

use std::fmt;

use xen_types::{DomId, Errno};

/// Size of a message header (`sizeof(struct xsd_sockmsg)`).
pub const HEADER_SIZE: usize = std::mem::size_of::<xen_sys::xsd_sockmsg>();
/// Largest payload in either direction (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = xen_sys::XENSTORE_PAYLOAD_MAX as usize;
/// Longest absolute path (`XENSTORE_ABS_PATH_MAX`).
pub const ABS_PATH_MAX: usize = xen_sys::XENSTORE_ABS_PATH_MAX as usize;
/// Longest relative path a client should send (`XENSTORE_REL_PATH_MAX`).
pub const REL_PATH_MAX: usize = xen_sys::XENSTORE_REL_PATH_MAX as usize;

/// Errors of the wire format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The header announces a payload larger than [`PAYLOAD_MAX`]: the stream cannot be
    /// trusted any more and the connection must be closed.
    #[error("payload of {0} bytes exceeds XENSTORE_PAYLOAD_MAX")]
    PayloadTooLarge(u32),
    /// A message type this protocol version does not define.
    #[error("unknown message type {0}")]
    UnknownType(u32),
    /// A string argument is not NUL-terminated, or there are too few/many.
    #[error("malformed payload: {0}")]
    Malformed(&'static str),
    /// A path is empty, too long, or has a forbidden character or slash.
    #[error("invalid path: {0}")]
    BadPath(&'static str),
    /// A permission string is not `[nrwb]<domid>`.
    #[error("invalid permission string {0:?}")]
    BadPerm(String),
    /// An error reply names no errno this protocol knows.
    #[error("unknown error name {0:?}")]
    BadErrno(String),
}

impl WireError {
    /// The errno a daemon answers for this error.
    pub fn errno(&self) -> Errno {
        match self {
            WireError::PayloadTooLarge(_) => Errno::E2BIG,
            WireError::UnknownType(_) => Errno::ENOSYS,
            _ => Errno::EINVAL,
        }
    }
}

/// A transaction id (`tx_id` of the header); [`TxId::NONE`] (0) outside transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TxId(pub u32);

impl TxId {
    /// No transaction.
    pub const NONE: TxId = TxId(0);
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

macro_rules! ops {
    ($($(#[$doc:meta])* $name:ident = $c:ident,)*) => {
        /// A message type (`enum xsd_sockmsg_type`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum Op {
            $($(#[$doc])* $name = xen_sys::$c,)*
        }

        impl Op {
            /// All message types, in numeric order.
            pub const ALL: &'static [Op] = &[$(Op::$name,)*];

            /// The header value.
            pub const fn raw(self) -> u32 {
                self as u32
            }

            /// The name used in `xs_wire.h`, without the `XS_` prefix.
            pub fn name(self) -> &'static str {
                match self {
                    $(Op::$name => &stringify!($c)[3..],)*
                }
            }
        }

        impl TryFrom<u32> for Op {
            type Error = WireError;
            fn try_from(v: u32) -> Result<Op, WireError> {
                $(if v == xen_sys::$c { return Ok(Op::$name); })*
                Err(WireError::UnknownType(v))
            }
        }
    };
}

ops! {
    /// `XS_CONTROL` (alias `XS_DEBUG`): implementation-defined commands.
    Control = XS_CONTROL,
    /// `XS_DIRECTORY`: list children.
    Directory = XS_DIRECTORY,
    /// `XS_READ`: read a value.
    Read = XS_READ,
    /// `XS_GET_PERMS`: read permissions.
    GetPerms = XS_GET_PERMS,
    /// `XS_WATCH`: add a watch.
    Watch = XS_WATCH,
    /// `XS_UNWATCH`: remove a watch.
    Unwatch = XS_UNWATCH,
    /// `XS_TRANSACTION_START`.
    TransactionStart = XS_TRANSACTION_START,
    /// `XS_TRANSACTION_END` (`T` commit, `F` abort).
    TransactionEnd = XS_TRANSACTION_END,
    /// `XS_INTRODUCE`: connect a domain's ring.
    Introduce = XS_INTRODUCE,
    /// `XS_RELEASE`: disconnect a domain.
    Release = XS_RELEASE,
    /// `XS_GET_DOMAIN_PATH`.
    GetDomainPath = XS_GET_DOMAIN_PATH,
    /// `XS_WRITE`.
    Write = XS_WRITE,
    /// `XS_MKDIR`.
    Mkdir = XS_MKDIR,
    /// `XS_RM`.
    Rm = XS_RM,
    /// `XS_SET_PERMS`.
    SetPerms = XS_SET_PERMS,
    /// `XS_WATCH_EVENT`: unsolicited event (daemon to client only).
    WatchEvent = XS_WATCH_EVENT,
    /// `XS_ERROR`: error reply (daemon to client only).
    Error = XS_ERROR,
    /// `XS_IS_DOMAIN_INTRODUCED`.
    IsDomainIntroduced = XS_IS_DOMAIN_INTRODUCED,
    /// `XS_RESUME`.
    Resume = XS_RESUME,
    /// `XS_SET_TARGET`.
    SetTarget = XS_SET_TARGET,
    /// `XS_RESET_WATCHES`.
    ResetWatches = XS_RESET_WATCHES,
    /// `XS_DIRECTORY_PART`: a slice of a long child list, with the node's generation.
    DirectoryPart = XS_DIRECTORY_PART,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A message header (`struct xsd_sockmsg`), with the type kept raw so that unknown types
/// can be answered with `ENOSYS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Message type (see [`Op`]).
    pub ty: u32,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id.
    pub tx_id: TxId,
    /// Payload length.
    pub len: u32,
}

impl Header {
    /// Parses a header from 16 native-endian bytes.
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Header {
        let w = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header {
            ty: w(0),
            req_id: w(4),
            tx_id: TxId(w(8)),
            len: w(12),
        }
    }

    /// The 16 wire bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(&self.ty.to_ne_bytes());
        b[4..8].copy_from_slice(&self.req_id.to_ne_bytes());
        b[8..12].copy_from_slice(&self.tx_id.0.to_ne_bytes());
        b[12..16].copy_from_slice(&self.len.to_ne_bytes());
        b
    }

    /// The message type, if known.
    pub fn op(&self) -> Result<Op, WireError> {
        Op::try_from(self.ty)
    }
}

impl From<xen_sys::xsd_sockmsg> for Header {
    fn from(m: xen_sys::xsd_sockmsg) -> Header {
        Header {
            ty: m.type_,
            req_id: m.req_id,
            tx_id: TxId(m.tx_id),
            len: m.len,
        }
    }
}

impl From<Header> for xen_sys::xsd_sockmsg {
    fn from(h: Header) -> xen_sys::xsd_sockmsg {
        xen_sys::xsd_sockmsg {
            type_: h.ty,
            req_id: h.req_id,
            tx_id: h.tx_id.0,
            len: h.len,
        }
    }
}

/// A whole message: header plus payload (`header.len == payload.len()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header.
    pub header: Header,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Message {
    /// A message with `payload`; fails if it is longer than [`PAYLOAD_MAX`].
    pub fn new(op: Op, req_id: u32, tx_id: TxId, payload: Vec<u8>) -> Result<Message, WireError> {
        if payload.len() > PAYLOAD_MAX {
            return Err(WireError::PayloadTooLarge(
                payload.len().try_into().unwrap_or(u32::MAX),
            ));
        }
        Ok(Message {
            header: Header {
                ty: op.raw(),
                req_id,
                tx_id,
                len: payload.len() as u32,
            },
            payload,
        })
    }

    /// A message whose payload is `parts`, each followed by a NUL, except the last one when
    /// `raw_last` is set (the value of `WRITE`, which is binary and unterminated).
    pub fn request(
        op: Op,
        req_id: u32,
        tx_id: TxId,
        parts: &[&[u8]],
        raw_last: bool,
    ) -> Result<Message, WireError> {
        let mut payload = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
        for (i, p) in parts.iter().enumerate() {
            if p.contains(&0) && !(raw_last && i + 1 == parts.len()) {
                return Err(WireError::Malformed("string argument contains NUL"));
            }
            payload.extend_from_slice(p);
            if !(raw_last && i + 1 == parts.len()) {
                payload.push(0);
            }
        }
        Message::new(op, req_id, tx_id, payload)
    }

    /// An `XS_ERROR` reply to `req` carrying `errno`'s name.
    pub fn error_reply(req: &Header, errno: Errno) -> Message {
        let mut payload = errno_name(errno).as_bytes().to_vec();
        payload.push(0);
        Message {
            header: Header {
                ty: Op::Error.raw(),
                req_id: req.req_id,
                tx_id: req.tx_id,
                len: payload.len() as u32,
            },
            payload,
        }
    }

    /// A reply to `req` of the same type with `payload`, or `E2BIG` if it is too long.
    pub fn reply(req: &Header, payload: Vec<u8>) -> Message {
        if payload.len() > PAYLOAD_MAX {
            return Message::error_reply(req, Errno::E2BIG);
        }
        Message {
            header: Header {
                ty: req.ty,
                req_id: req.req_id,
                tx_id: req.tx_id,
                len: payload.len() as u32,
            },
            payload,
        }
    }

    /// An `XS_WATCH_EVENT` for `path` and `token` (request and transaction ids 0).
    pub fn watch_event(path: &[u8], token: &[u8]) -> Result<Message, WireError> {
        Message::request(Op::WatchEvent, 0, TxId::NONE, &[path, token], false)
    }

    /// The message type, if known.
    pub fn op(&self) -> Result<Op, WireError> {
        self.header.op()
    }

    /// Header and payload as wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_SIZE + self.payload.len());
        self.encode_into(&mut v);
        v
    }

    /// Appends the wire bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut h = self.header;
        h.len = self.payload.len() as u32;
        out.extend_from_slice(&h.to_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// The payload as NUL-terminated strings. Fails if the payload is non-empty and does
    /// not end with a NUL (a trailing unterminated fragment is malformed).
    pub fn strings(&self) -> Result<Vec<&[u8]>, WireError> {
        split_strings(&self.payload)
    }

    /// For an `XS_ERROR` message, the errno it carries.
    pub fn error_errno(&self) -> Option<Result<Errno, WireError>> {
        if self.header.ty != Op::Error.raw() {
            return None;
        }
        let s = self.payload.strip_suffix(&[0]).unwrap_or(&self.payload);
        Some(
            errno_from_name(s)
                .ok_or_else(|| WireError::BadErrno(String::from_utf8_lossy(s).into_owned())),
        )
    }
}

/// Splits a payload made of NUL-terminated strings. An empty payload has no strings.
pub fn split_strings(payload: &[u8]) -> Result<Vec<&[u8]>, WireError> {
    if payload.is_empty() {
        return Ok(Vec::new());
    }
    let Some(body) = payload.strip_suffix(&[0]) else {
        return Err(WireError::Malformed("missing terminating NUL"));
    };
    Ok(body.split(|&b| b == 0).collect())
}

/// The errno names of `xsd_errors[]`, in header order.
pub const ERRNO_NAMES: &[(&str, i32)] = &[
    ("EINVAL", libc::EINVAL),
    ("EACCES", libc::EACCES),
    ("EEXIST", libc::EEXIST),
    ("EISDIR", libc::EISDIR),
    ("ENOENT", libc::ENOENT),
    ("ENOMEM", libc::ENOMEM),
    ("ENOSPC", libc::ENOSPC),
    ("EIO", libc::EIO),
    ("ENOTEMPTY", libc::ENOTEMPTY),
    ("ENOSYS", libc::ENOSYS),
    ("EROFS", libc::EROFS),
    ("EBUSY", libc::EBUSY),
    ("EAGAIN", libc::EAGAIN),
    ("EISCONN", libc::EISCONN),
    ("E2BIG", libc::E2BIG),
    ("EPERM", libc::EPERM),
];

/// The wire name of `e`; errnos outside `xsd_errors[]` are sent as `EINVAL`, as C
/// xenstored does.
pub fn errno_name(e: Errno) -> &'static str {
    ERRNO_NAMES
        .iter()
        .find(|(_, n)| *n == e.0)
        .map_or("EINVAL", |(s, _)| s)
}

/// The errno of a wire name.
pub fn errno_from_name(name: &[u8]) -> Option<Errno> {
    ERRNO_NAMES
        .iter()
        .find(|(s, _)| s.as_bytes() == name)
        .map(|&(_, n)| Errno(n))
}

/// Kinds of path a [`validate_path`] call accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Only absolute paths (`/...`).
    Absolute,
    /// Absolute or relative paths.
    AbsoluteOrRelative,
    /// Absolute, relative, or special (`@...`) paths, as accepted by `WATCH`.
    Any,
}

/// Checks a path against `xenstore.txt`: non-empty, only `[A-Za-z0-9-/_@]`, no doubled
/// slash, no trailing slash except `/` itself, at most [`ABS_PATH_MAX`] bytes absolute or
/// [`REL_PATH_MAX`] relative.
pub fn validate_path(path: &[u8], kind: PathKind) -> Result<(), WireError> {
    let Some(&first) = path.first() else {
        return Err(WireError::BadPath("empty path"));
    };
    // One pass over the bytes: allowed characters, and doubled slashes (reported after
    // the checks below, as before).
    let mut doubled = false;
    let mut after_slash = false;
    for &c in path {
        if !(c.is_ascii_alphanumeric() || matches!(c, b'-' | b'/' | b'_' | b'@')) {
            return Err(WireError::BadPath("forbidden character"));
        }
        doubled |= after_slash && c == b'/';
        after_slash = c == b'/';
    }
    match first {
        b'/' => {
            if path.len() > ABS_PATH_MAX {
                return Err(WireError::BadPath("absolute path too long"));
            }
        }
        b'@' if kind == PathKind::Any => {
            if path.len() > ABS_PATH_MAX {
                return Err(WireError::BadPath("special path too long"));
            }
        }
        b'@' => return Err(WireError::BadPath("special path not allowed here")),
        _ => {
            if kind == PathKind::Absolute {
                return Err(WireError::BadPath("relative path not allowed here"));
            }
            if path.len() > REL_PATH_MAX {
                return Err(WireError::BadPath("relative path too long"));
            }
        }
    }
    if doubled {
        return Err(WireError::BadPath("doubled slash"));
    }
    if path.len() > 1 && path.ends_with(b"/") {
        return Err(WireError::BadPath("trailing slash"));
    }
    Ok(())
}

/// The access a permission entry grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Access {
    /// `n`: no access.
    #[default]
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: read and write.
    Both,
}

impl Access {
    /// True if reading is allowed.
    pub const fn can_read(self) -> bool {
        matches!(self, Access::Read | Access::Both)
    }

    /// True if writing is allowed.
    pub const fn can_write(self) -> bool {
        matches!(self, Access::Write | Access::Both)
    }

    /// The one-letter code.
    pub const fn letter(self) -> char {
        match self {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        }
    }
}

/// One permission entry: `<access><domid>`, e.g. `r5`. The first entry of a node names its
/// owner and the access of every domain without an entry of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Perm {
    /// The domain.
    pub domid: DomId,
    /// What it may do.
    pub access: Access,
}

impl Perm {
    /// A permission entry.
    pub const fn new(domid: DomId, access: Access) -> Perm {
        Perm { domid, access }
    }

    /// Parses `n0`, `r5`, `w7`, `b12`.
    pub fn parse(s: &[u8]) -> Result<Perm, WireError> {
        let bad = || WireError::BadPerm(String::from_utf8_lossy(s).into_owned());
        let (&c, digits) = s.split_first().ok_or_else(bad)?;
        let access = match c {
            b'n' => Access::None,
            b'r' => Access::Read,
            b'w' => Access::Write,
            b'b' => Access::Both,
            _ => return Err(bad()),
        };
        if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let v: u32 = std::str::from_utf8(digits)
            .map_err(|_| bad())?
            .parse()
            .map_err(|_| bad())?;
        let domid = u16::try_from(v).map_err(|_| bad())?;
        Ok(Perm {
            domid: DomId(domid),
            access,
        })
    }

    /// Parses a list of NUL-separated strings.
    pub fn parse_list<'a, I: IntoIterator<Item = &'a [u8]>>(
        items: I,
    ) -> Result<Vec<Perm>, WireError> {
        let v = items
            .into_iter()
            .map(Perm::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if v.is_empty() {
            return Err(WireError::Malformed("no permissions"));
        }
        Ok(v)
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.access.letter(), self.domid.0)
    }
}

impl std::str::FromStr for Perm {
    type Err = WireError;
    fn from_str(s: &str) -> Result<Perm, WireError> {
        Perm::parse(s.as_bytes())
    }
}

/// Incremental decoder for a byte stream of messages.
///
/// Feed it whatever the transport returned; take complete messages out with
/// [`next_message`](Decoder::next_message). A header announcing more than
/// [`PAYLOAD_MAX`] bytes is a fatal [`WireError::PayloadTooLarge`]: the stream has lost
/// framing and the connection must be closed. Unknown types are returned as messages
/// (check [`Message::op`]) so a server can answer `ENOSYS` and carry on.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    pos: usize,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Appends bytes from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a message.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The header of the message being received, once its 16 bytes are in.
    pub fn peek_header(&self) -> Option<Header> {
        let h: &[u8; HEADER_SIZE] = self
            .buf
            .get(self.pos..self.pos + HEADER_SIZE)?
            .try_into()
            .ok()?;
        Some(Header::from_bytes(h))
    }

    /// The next complete message, `None` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        let Some(header) = self.peek_header() else {
            self.compact();
            return Ok(None);
        };
        if header.len as usize > PAYLOAD_MAX {
            return Err(WireError::PayloadTooLarge(header.len));
        }
        let start = self.pos + HEADER_SIZE;
        let end = start + header.len as usize;
        if self.buf.len() < end {
            self.compact();
            return Ok(None);
        }
        let payload = self.buf[start..end].to_vec();
        self.pos = end;
        Ok(Some(Message { header, payload }))
    }

    fn compact(&mut self) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_numbers_come_from_the_header() {
        assert_eq!(Op::DirectoryPart.raw(), 22);
        assert_eq!(Op::try_from(20), Err(WireError::UnknownType(20)));
        assert_eq!(
            Op::try_from(xen_sys::XS_INVALID),
            Err(WireError::UnknownType(65535))
        );
        for op in Op::ALL {
            assert_eq!(Op::try_from(op.raw()), Ok(*op));
        }
        assert_eq!(Op::ResetWatches.name(), "RESET_WATCHES");
        assert_eq!(HEADER_SIZE, 16);
    }

    #[test]
    fn paths() {
        use PathKind::*;
        assert!(validate_path(b"/", Absolute).is_ok());
        assert!(validate_path(b"/local/domain/0", Absolute).is_ok());
        assert!(validate_path(b"a-b_c@d", AbsoluteOrRelative).is_ok());
        assert!(validate_path(b"a", Absolute).is_err());
        assert!(validate_path(b"", Any).is_err());
        assert!(validate_path(b"/a//b", Any).is_err());
        assert!(validate_path(b"/a/", Any).is_err());
        assert!(validate_path(b"/a b", Any).is_err());
        assert!(validate_path(b"/a.b", Any).is_err());
        assert!(validate_path(b"@releaseDomain", AbsoluteOrRelative).is_err());
        assert!(validate_path(b"@releaseDomain/5", Any).is_ok());
        let long = [b"/".as_slice(), &[b'a'; ABS_PATH_MAX - 1]].concat();
        assert!(validate_path(&long, Absolute).is_ok());
        let longer = [long.as_slice(), b"a"].concat();
        assert!(validate_path(&longer, Absolute).is_err());
        assert!(validate_path(&[b'a'; REL_PATH_MAX], AbsoluteOrRelative).is_ok());
        assert!(validate_path(&[b'a'; REL_PATH_MAX + 1], AbsoluteOrRelative).is_err());
    }

    #[test]
    fn perms() {
        assert_eq!(
            Perm::parse(b"n0").unwrap(),
            Perm::new(DomId(0), Access::None)
        );
        assert_eq!(Perm::parse(b"b65535").unwrap().domid, DomId(65535));
        assert_eq!("r5".parse::<Perm>().unwrap().to_string(), "r5");
        for bad in [
            &b""[..],
            b"x1",
            b"r",
            b"r-1",
            b"r65536",
            b"r1a",
            b"r000001",
            b"r 1",
        ] {
            assert!(Perm::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Perm::parse_list(Vec::<&[u8]>::new()).is_err());
    }

    #[test]
    fn errnos() {
        assert_eq!(errno_name(Errno::EAGAIN), "EAGAIN");
        assert_eq!(errno_name(Errno::ESRCH), "EINVAL");
        assert_eq!(errno_from_name(b"E2BIG"), Some(Errno::E2BIG));
        assert_eq!(errno_from_name(b"EQUOTA"), None);
        let h = Header {
            ty: Op::Read.raw(),
            req_id: 9,
            tx_id: TxId(3),
            len: 0,
        };
        let e = Message::error_reply(&h, Errno::ENOENT);
        assert_eq!(e.payload, b"ENOENT\0");
        assert_eq!(e.header.req_id, 9);
        assert_eq!(e.error_errno(), Some(Ok(Errno::ENOENT)));
    }

    #[test]
    fn limits_are_enforced() {
        assert!(Message::new(Op::Write, 0, TxId::NONE, vec![0; PAYLOAD_MAX]).is_ok());
        assert_eq!(
            Message::new(Op::Write, 0, TxId::NONE, vec![0; PAYLOAD_MAX + 1]),
            Err(WireError::PayloadTooLarge(4097))
        );
        assert!(Message::request(Op::Read, 0, TxId::NONE, &[b"a\0b"], false).is_err());
        let h = Header {
            ty: 2,
            req_id: 0,
            tx_id: TxId::NONE,
            len: 4097,
        };
        let mut d = Decoder::new();
        d.feed(&h.to_bytes());
        assert_eq!(d.next_message(), Err(WireError::PayloadTooLarge(4097)));
        let h = Header { len: 10, ..h };
        assert_eq!(
            Message::reply(&h, vec![1; PAYLOAD_MAX + 1]).error_errno(),
            Some(Ok(Errno::E2BIG))
        );
    }

    #[test]
    fn strings() {
        assert_eq!(split_strings(b"").unwrap(), Vec::<&[u8]>::new());
        assert_eq!(
            split_strings(b"a\0\0b\0").unwrap(),
            vec![&b"a"[..], b"", b"b"]
        );
        assert!(split_strings(b"a\0b").is_err());
    }

    proptest::proptest! {
        #[test]
        fn decoder_never_panics_and_round_trips(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..64), 0..32)
        ) {
            let mut d = Decoder::new();
            for c in &chunks {
                d.feed(c);
                while let Ok(Some(m)) = d.next_message() {
                    proptest::prop_assert!(m.payload.len() <= PAYLOAD_MAX);
                    let _ = m.strings();
                    let _ = m.error_errno();
                }
            }
        }

        #[test]
        fn encode_decode(ty in 0u32..30, req in proptest::num::u32::ANY, tx in proptest::num::u32::ANY,
                         payload in proptest::collection::vec(proptest::num::u8::ANY, 0..200), split in 0usize..250) {
            let m = Message { header: Header { ty, req_id: req, tx_id: TxId(tx), len: payload.len() as u32 }, payload };
            let bytes = m.to_bytes();
            let split = split.min(bytes.len());
            let mut d = Decoder::new();
            d.feed(&bytes[..split]);
            let first = d.next_message().unwrap();
            d.feed(&bytes[split..]);
            let got = match first { Some(x) => x, None => d.next_message().unwrap().unwrap() };
            proptest::prop_assert_eq!(got, m);
            proptest::prop_assert_eq!(d.pending(), 0);
        }
    }
}
