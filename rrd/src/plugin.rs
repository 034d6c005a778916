//! The xcp-rrdd plugin protocol v2 (`doc/content/xcp-rrdd/design/plugin-protocol-v2.md`,
//! `rrd_protocol_v2.ml`): a plugin writes a shared-memory file holding
//!
//! | field | bytes |
//! |-------|-------|
//! | `DATASOURCES` | 11 |
//! | CRC-32 of timestamp and values | 4 |
//! | CRC-32 of the metadata | 4 |
//! | number of data sources *n* | 4 |
//! | timestamp (double) | 8 |
//! | values (int64 or double) | 8 *n* |
//! | metadata length | 4 |
//! | metadata (JSON) | length |
//!
//! all big-endian; the reader skips parsing the metadata while its CRC is unchanged.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::de::{Deserializer, MapAccess, Visitor};

use crate::{DsType, DsValue, Error, Transform};

/// The header string.
pub const HEADER: &[u8] = b"DATASOURCES";
const DATA_CRC_AT: usize = 11;
const META_CRC_AT: usize = 15;
const COUNT_AT: usize = 19;
const TIMESTAMP_AT: usize = 23;
const VALUES_AT: usize = 31;

/// Largest payload a [`Reader`] accepts by default (xcp-rrdd maps plugin files of a few
/// pages; this bound keeps a broken plugin from making the reader allocate without limit).
pub const DEFAULT_LIMIT: usize = 1 << 20;

/// Bytes of a payload with `n` data sources and `meta_len` bytes of metadata.
pub fn total_bytes(n: usize, meta_len: usize) -> usize {
    VALUES_AT + 8 * n + 4 + meta_len
}

/// Who a data source belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The host.
    Host,
    /// A VM, by UUID.
    Vm(String),
    /// An SR, by UUID.
    Sr(String),
}

impl Owner {
    fn to_wire(&self) -> String {
        match self {
            Owner::Host => "host".into(),
            Owner::Vm(u) => format!("vm {u}"),
            Owner::Sr(u) => format!("sr {u}"),
        }
    }

    fn parse(s: &str) -> Option<Owner> {
        match s.split_once(' ') {
            None if s == "host" => Some(Owner::Host),
            Some(("vm", u)) => Some(Owner::Vm(u.to_owned())),
            Some(("sr", u)) => Some(Owner::Sr(u.to_owned())),
            _ => None,
        }
    }
}

/// One data source of a plugin, with its current value.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginDs {
    /// Name.
    pub name: String,
    /// Owner.
    pub owner: Owner,
    /// Description.
    pub description: String,
    /// Units.
    pub units: String,
    /// Rate type (default absolute).
    pub ty: DsType,
    /// Value (its variant is the `value_type`).
    pub value: DsValue,
    /// Smallest valid value.
    pub min: f64,
    /// Largest valid value.
    pub max: f64,
    /// Enabled by default.
    pub default: bool,
    /// Transform applied to PDPs.
    pub transform: Transform,
}

/// What a plugin reports at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// Seconds since the epoch.
    pub timestamp: f64,
    /// Data sources in the order their values are written.
    pub datasources: Vec<PluginDs>,
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The metadata JSON (`rrd_json.ml`'s `metadata_to_json`): data sources in order.
pub fn metadata_json(dss: &[PluginDs]) -> Result<String, Error> {
    let mut out = String::from("{\"datasources\":{");
    for (i, ds) in dss.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}:{{", json_str(&ds.name));
        if !ds.description.is_empty() {
            let _ = write!(out, "\"description\":{},", json_str(&ds.description));
        }
        let _ = write!(out, "\"owner\":{},", json_str(&ds.owner.to_wire()));
        if ds.transform == Transform::Inverse {
            out.push_str("\"transform\":\"inverse\",");
        }
        match ds.value {
            DsValue::Float(f) => {
                let _ = write!(out, "\"value\":\"{f:.2}\",\"value_type\":\"float\",");
            }
            DsValue::Int64(n) => {
                let _ = write!(out, "\"value\":\"{n}\",\"value_type\":\"int64\",");
            }
            DsValue::Unknown => {
                return Err(Error::InvalidPayload(format!(
                    "data source {}: an unknown value cannot be written",
                    ds.name
                )))
            }
        }
        let _ = write!(
            out,
            "\"type\":\"{}\",\"default\":\"{}\",\"units\":{},\"min\":\"{:.2}\",\"max\":\"{:.2}\"}}",
            ds.ty.as_str().to_ascii_lowercase(),
            ds.default,
            json_str(&ds.units),
            ds.min,
            ds.max
        );
    }
    out.push_str("}}");
    Ok(out)
}

/// Encodes a payload (`write_payload`).
pub fn encode(p: &Payload) -> Result<Vec<u8>, Error> {
    let meta = metadata_json(&p.datasources)?;
    let n = p.datasources.len();
    let mut b = Vec::with_capacity(total_bytes(n, meta.len()));
    b.extend_from_slice(HEADER);
    b.extend_from_slice(&[0; 4]); // data CRC, below
    b.extend_from_slice(&crc32fast::hash(meta.as_bytes()).to_be_bytes());
    b.extend_from_slice(&(n as u32).to_be_bytes());
    b.extend_from_slice(&p.timestamp.to_bits().to_be_bytes());
    for ds in &p.datasources {
        let bits = match ds.value {
            DsValue::Float(f) => f.to_bits(),
            DsValue::Int64(i) => i as u64,
            DsValue::Unknown => unreachable!("rejected by metadata_json"),
        };
        b.extend_from_slice(&bits.to_be_bytes());
    }
    b.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    b.extend_from_slice(meta.as_bytes());
    let crc = crc32fast::hash(&b[TIMESTAMP_AT..VALUES_AT + 8 * n]);
    b[DATA_CRC_AT..DATA_CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(b)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A JSON object's members in document order (serde_json's map sorts keys).
struct Ordered(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Ordered, A::Error> {
                let mut v = Vec::new();
                while let Some(kv) = m.next_entry()? {
                    v.push(kv);
                }
                Ok(Ordered(v))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(serde::Deserialize)]
struct Meta {
    datasources: Ordered,
}

fn field(o: &serde_json::Map<String, serde_json::Value>, k: &str) -> Option<String> {
    o.get(k).map(|v| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Parses metadata JSON into data sources with zero values of the right type.
pub fn parse_metadata(meta: &str) -> Result<Vec<PluginDs>, Error> {
    let bad = |m: String| Error::InvalidPayload(m);
    let m: Meta = serde_json::from_str(meta).map_err(|e| bad(e.to_string()))?;
    m.datasources
        .0
        .into_iter()
        .map(|(name, v)| {
            let o = v
                .as_object()
                .ok_or_else(|| bad(format!("{name}: not an object")))?;
            let value = match field(o, "value_type").as_deref() {
                Some("float") => DsValue::Float(0.0),
                Some("int64") => DsValue::Int64(0),
                other => return Err(bad(format!("{name}: value_type {other:?}"))),
            };
            let ty_s = field(o, "type").unwrap_or_else(|| "absolute".into());
            let ty = DsType::parse(&ty_s).ok_or_else(|| bad(format!("{name}: type {ty_s}")))?;
            let num = |k: &str, d: f64| -> Result<f64, Error> {
                match field(o, k) {
                    None => Ok(d),
                    Some(s) => {
                        crate::fmt::parse_f(&s).ok_or_else(|| bad(format!("{name}: {k} {s}")))
                    }
                }
            };
            let owner_s = field(o, "owner").unwrap_or_else(|| "host".into());
            let owner =
                Owner::parse(&owner_s).ok_or_else(|| bad(format!("{name}: owner {owner_s}")))?;
            let default = match field(o, "default").as_deref() {
                None | Some("false") => false,
                Some("true") => true,
                Some(s) => return Err(bad(format!("{name}: default {s}"))),
            };
            let transform = match field(o, "transform").as_deref() {
                None | Some("identity") => Transform::Identity,
                Some("inverse") => Transform::Inverse,
                Some(s) => return Err(bad(format!("{name}: transform {s}"))),
            };
            Ok(PluginDs {
                description: field(o, "description").unwrap_or_default(),
                units: field(o, "units").unwrap_or_default(),
                min: num("min", f64::NEG_INFINITY)?,
                max: num("max", f64::INFINITY)?,
                name,
                owner,
                ty,
                value,
                default,
                transform,
            })
        })
        .collect()
}

/// Reads successive payloads of one plugin (`make_payload_reader`), caching the metadata
/// while its CRC is unchanged.
#[derive(Debug)]
pub struct Reader {
    last_data_crc: Option<u32>,
    last_meta_crc: Option<u32>,
    cached: Vec<PluginDs>,
    limit: usize,
}

impl Default for Reader {
    fn default() -> Self {
        Reader::new(DEFAULT_LIMIT)
    }
}

impl Reader {
    /// A reader that refuses payloads larger than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Reader {
            last_data_crc: None,
            last_meta_crc: None,
            cached: vec![],
            limit,
        }
    }

    /// Decodes one payload. Errors: [`Error::InvalidHeader`], [`Error::NoUpdate`] (same data
    /// as last time), [`Error::Truncated`], [`Error::PayloadTooLarge`],
    /// [`Error::InvalidChecksum`], [`Error::InvalidPayload`]. A failed read changes nothing.
    pub fn read(&mut self, b: &[u8]) -> Result<Payload, Error> {
        let need = |need: usize| {
            if b.len() < need {
                Err(Error::Truncated {
                    need,
                    have: b.len(),
                })
            } else {
                Ok(())
            }
        };
        need(HEADER.len())?;
        if &b[..HEADER.len()] != HEADER {
            return Err(Error::InvalidHeader);
        }
        need(VALUES_AT)?;
        let data_crc = be32(b, DATA_CRC_AT);
        if Some(data_crc) == self.last_data_crc {
            return Err(Error::NoUpdate);
        }
        let meta_crc = be32(b, META_CRC_AT);
        let n = be32(b, COUNT_AT) as usize;
        let values_end = VALUES_AT.saturating_add(n.saturating_mul(8));
        if values_end.saturating_add(4) > self.limit {
            return Err(Error::PayloadTooLarge {
                size: values_end + 4,
                limit: self.limit,
            });
        }
        need(values_end)?;
        let computed = crc32fast::hash(&b[TIMESTAMP_AT..values_end]);
        if computed != data_crc {
            return Err(Error::InvalidChecksum {
                what: "data",
                stored: data_crc,
                computed,
            });
        }
        let timestamp = f64::from_bits(be64(b, TIMESTAMP_AT));
        let dss = if Some(meta_crc) == self.last_meta_crc && self.cached.len() == n {
            self.cached.clone()
        } else {
            need(values_end + 4)?;
            let len = be32(b, values_end) as usize;
            let total = total_bytes(n, len);
            if total > self.limit {
                return Err(Error::PayloadTooLarge {
                    size: total,
                    limit: self.limit,
                });
            }
            need(total)?;
            let meta = &b[values_end + 4..total];
            let computed = crc32fast::hash(meta);
            if computed != meta_crc {
                return Err(Error::InvalidChecksum {
                    what: "metadata",
                    stored: meta_crc,
                    computed,
                });
            }
            // The C writer counts a trailing NUL in the length; drop it.
            let text = std::str::from_utf8(meta)
                .map_err(|e| Error::InvalidPayload(e.to_string()))?
                .trim_end_matches('\0');
            let dss = parse_metadata(text)?;
            if dss.len() != n {
                return Err(Error::InvalidPayload(format!(
                    "header says {n} data sources, metadata lists {}",
                    dss.len()
                )));
            }
            dss
        };
        let datasources: Vec<PluginDs> = dss
            .into_iter()
            .enumerate()
            .map(|(i, mut ds)| {
                let bits = be64(b, VALUES_AT + 8 * i);
                ds.value = match ds.value {
                    DsValue::Int64(_) => DsValue::Int64(bits as i64),
                    _ => DsValue::Float(f64::from_bits(bits)),
                };
                ds
            })
            .collect();
        self.last_data_crc = Some(data_crc);
        self.last_meta_crc = Some(meta_crc);
        self.cached.clone_from(&datasources);
        Ok(Payload {
            timestamp,
            datasources,
        })
    }
}

/// A plugin's side: writes payloads into its shared-memory file (by default under
/// `/dev/shm/metrics/`), in place, so a reader never sees the file empty.
#[derive(Debug)]
pub struct FileWriter {
    path: PathBuf,
    limit: usize,
}

impl FileWriter {
    /// A writer of `path` refusing payloads over `limit` bytes.
    pub fn new(path: &Path, limit: usize) -> Self {
        FileWriter {
            path: path.to_owned(),
            limit,
        }
    }

    /// Writes one payload.
    pub fn write(&self, p: &Payload) -> Result<(), Error> {
        use std::os::unix::fs::FileExt;
        let b = encode(p)?;
        if b.len() > self.limit {
            return Err(Error::PayloadTooLarge {
                size: b.len(),
                limit: self.limit,
            });
        }
        let io = |e| Error::Io(self.path.display().to_string(), e);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&self.path)
            .map_err(io)?;
        f.write_all_at(&b, 0).map_err(io)?;
        f.set_len(b.len() as u64).map_err(io)
    }
}

/// Reads a plugin's file with a [`Reader`].
#[derive(Debug)]
pub struct FileReader {
    path: PathBuf,
    reader: Reader,
    buf: Vec<u8>,
}

impl FileReader {
    /// A reader of `path`.
    pub fn new(path: &Path, limit: usize) -> Self {
        FileReader {
            path: path.to_owned(),
            reader: Reader::new(limit),
            buf: Vec::new(),
        }
    }

    /// Reads the file and decodes it (see [`Reader::read`]).
    pub fn read(&mut self) -> Result<Payload, Error> {
        use std::io::Read;
        let io = |e| Error::Io(self.path.display().to_string(), e);
        let f = std::fs::File::open(&self.path).map_err(io)?;
        self.buf.clear();
        let limit = self.reader.limit as u64 + 1;
        f.take(limit).read_to_end(&mut self.buf).map_err(io)?;
        self.reader.read(&self.buf)
    }
}
