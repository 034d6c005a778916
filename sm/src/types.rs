//! Identifiers and the VDI record.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! uuid_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A new random (v4) uuid.
            pub fn new() -> Self {
                Self(uuid::Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_newtype!(
    /// An SR's uuid.
    SrUuid
);
uuid_newtype!(
    /// A VDI's uuid.
    VdiUuid
);
uuid_newtype!(
    /// One image of a chain: a VDI's own image has the VDI's uuid; a hidden parent (the
    /// frozen base two clones share, or a deleted snapshot still holding data) has its own.
    ImageId
);

impl From<VdiUuid> for ImageId {
    fn from(v: VdiUuid) -> ImageId {
        ImageId(v.0)
    }
}

/// A VDI as the SR sees it (what `SR.scan` reports to XAPI).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VdiInfo {
    /// The VDI's uuid.
    pub uuid: VdiUuid,
    /// `name_label`.
    pub name_label: String,
    /// Guest-visible size in bytes (from the image header).
    pub virtual_size: u64,
    /// Bytes the VDI's own image takes on disk (allocated blocks; shared parents are not
    /// counted).
    pub physical_utilisation: u64,
    /// A snapshot (read-only; its data is the disk's at the time it was taken).
    pub is_a_snapshot: bool,
    /// The VDI this is a snapshot of.
    pub snapshot_of: Option<VdiUuid>,
    /// The image this VDI's image reads through to (none for a flat image).
    pub parent: Option<ImageId>,
}
