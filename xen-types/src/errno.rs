//! An errno value, as Xen's hypercalls and libraries report it.

use std::fmt;

/// An `errno` value. Xen's hypercalls return `-errno`; the C libraries set `errno`; the
/// simulated host returns the same numbers, so callers match on one set of values.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

macro_rules! errnos {
    ($($name:ident),* $(,)?) => {
        impl Errno {
            $(
                #[doc = concat!("`", stringify!($name), "`")]
                pub const $name: Errno = Errno(libc::$name);
            )*
        }
    };
}

errnos!(
    EPERM,
    ENOENT,
    ESRCH,
    EINTR,
    EIO,
    ENXIO,
    E2BIG,
    EBADF,
    EAGAIN,
    ENOMEM,
    EACCES,
    EFAULT,
    EBUSY,
    EEXIST,
    ENODEV,
    EINVAL,
    ENOSPC,
    ENOSYS,
    ENOTEMPTY,
    EROFS,
    ERANGE,
    EISCONN,
    ENOTCONN,
    EOPNOTSUPP,
    EMLINK,
    ENAMETOOLONG,
    EALREADY,
    ENOBUFS,
    ETIMEDOUT,
    ECONNRESET,
    EPIPE,
    ENOTSUP,
    EOVERFLOW,
    EDQUOT,
);

impl Errno {
    /// The calling thread's current `errno`.
    pub fn last() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }

    /// The raw value.
    pub const fn get(self) -> i32 {
        self.0
    }

    /// The symbolic name (`"ENOMEM"`), when it is one this type knows.
    pub fn name(self) -> Option<&'static str> {
        let n = match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::ESRCH => "ESRCH",
            libc::EINTR => "EINTR",
            libc::EIO => "EIO",
            libc::ENXIO => "ENXIO",
            libc::E2BIG => "E2BIG",
            libc::EBADF => "EBADF",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EFAULT => "EFAULT",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::ENODEV => "ENODEV",
            libc::EINVAL => "EINVAL",
            libc::ENOSPC => "ENOSPC",
            libc::ENOSYS => "ENOSYS",
            libc::ENOTEMPTY => "ENOTEMPTY",
            libc::EROFS => "EROFS",
            libc::ERANGE => "ERANGE",
            libc::EISCONN => "EISCONN",
            libc::ENOTCONN => "ENOTCONN",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::EMLINK => "EMLINK",
            libc::ENAMETOOLONG => "ENAMETOOLONG",
            libc::EALREADY => "EALREADY",
            libc::ENOBUFS => "ENOBUFS",
            libc::ETIMEDOUT => "ETIMEDOUT",
            libc::ECONNRESET => "ECONNRESET",
            libc::EPIPE => "EPIPE",
            libc::EOVERFLOW => "EOVERFLOW",
            libc::EDQUOT => "EDQUOT",
            _ => return None,
        };
        Some(n)
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = std::io::Error::from_raw_os_error(self.0);
        match self.name() {
            Some(n) => write!(f, "{n}: {msg}"),
            None => write!(f, "errno {}: {msg}", self.0),
        }
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for std::io::Error {
    fn from(e: Errno) -> std::io::Error {
        std::io::Error::from_raw_os_error(e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_messages() {
        assert_eq!(format!("{:?}", Errno::ENOMEM), "ENOMEM");
        assert!(Errno::ESRCH
            .to_string()
            .starts_with("ESRCH: No such process"));
        assert_eq!(Errno(9999).name(), None);
    }
}
