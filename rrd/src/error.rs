//! The crate's one error type.

/// What went wrong reading, writing or querying round-robin data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An XML document (an RRD, an `<xport>` or a perfmon config) that does not parse or
    /// does not have the expected shape.
    #[error("bad XML: {0}")]
    Xml(String),
    /// No archive with the asked consolidation function (or no RRD at all).
    #[error("no RRA available")]
    NoRraAvailable,
    /// The named data source is not in the RRD.
    #[error("invalid data source: {0}")]
    InvalidDataSource(String),
    /// A plugin file that does not start with `DATASOURCES`.
    #[error("plugin payload: invalid header string")]
    InvalidHeader,
    /// A plugin file whose data is the same as at the last read.
    #[error("plugin payload: no update since the last read")]
    NoUpdate,
    /// A plugin file whose data or metadata CRC does not match its bytes.
    #[error("plugin payload: {what} checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    InvalidChecksum {
        /// `data` or `metadata`.
        what: &'static str,
        /// The CRC written in the header.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// A plugin file shorter than its header says.
    #[error("plugin payload truncated: {need} bytes needed, {have} present")]
    Truncated {
        /// Bytes the header asks for.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// A plugin payload larger than the reader accepts.
    #[error("plugin payload too large: {size} bytes, limit {limit}")]
    PayloadTooLarge {
        /// Bytes the header asks for (or the writer would write).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Plugin metadata that is not the JSON the protocol defines.
    #[error("plugin payload: invalid metadata: {0}")]
    InvalidPayload(String),
    /// A perfmon `<config>` that perfmon would reject.
    #[error("perfmon config: {0}")]
    PerfmonConfig(String),
    /// A file operation.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}
