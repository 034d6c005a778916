//! `xe`: XenServer's command line over the XenAPI (never the database).
//!
//! Command shapes and output follow xe: `vm-list params=all name-label=web --minimal`, and
//! records printed as `uuid ( RO)           : ...` with the keys right-aligned.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;

mod help;
mod params;

pub use self::help::{commands, help, Command};
use crate::client::{Client, Endpoint, TlsVerify};
use crate::datamodel::{self, Ty, NULL_REF};
use crate::value::Value;
use crate::Error;

/// Default unix socket of a local xapi.
pub const DEFAULT_SOCKET: &str = "/var/lib/xcp/xapi";

/// xe object names and their XAPI classes.
const CLASSES: &[(&str, &str)] = &[
    ("vm", "VM"),
    ("host", "host"),
    ("pool", "pool"),
    ("sr", "SR"),
    ("pbd", "PBD"),
    ("vdi", "VDI"),
    ("vbd", "VBD"),
    ("network", "network"),
    ("pif", "PIF"),
    ("vif", "VIF"),
    ("bond", "Bond"),
    ("vlan", "VLAN"),
    ("pgpu", "PGPU"),
    ("gpu-group", "GPU_group"),
    ("vgpu", "VGPU"),
    ("vgpu-type", "VGPU_type"),
    ("task", "task"),
];

/// Parameters `<object>-list` prints by default.
fn default_params(obj: &str) -> &'static [&'static str] {
    match obj {
        "vm" => &["uuid", "name-label", "power-state"],
        "host" | "gpu-group" => &["uuid", "name-label", "name-description"],
        "pool" => &[
            "uuid",
            "name-label",
            "name-description",
            "master",
            "default-SR",
        ],
        "sr" => &[
            "uuid",
            "name-label",
            "name-description",
            "host",
            "type",
            "content-type",
        ],
        "pbd" => &[
            "uuid",
            "host-uuid",
            "sr-uuid",
            "device-config",
            "currently-attached",
        ],
        "vdi" => &[
            "uuid",
            "name-label",
            "name-description",
            "sr-uuid",
            "virtual-size",
            "sharable",
            "read-only",
        ],
        "vbd" => &[
            "uuid",
            "vm-uuid",
            "vm-name-label",
            "vdi-uuid",
            "empty",
            "device",
        ],
        "network" => &["uuid", "name-label", "name-description", "bridge"],
        "pif" => &[
            "uuid",
            "device",
            "currently-attached",
            "VLAN",
            "network-uuid",
        ],
        "vif" => &["uuid", "vm-uuid", "device", "network-uuid"],
        "bond" => &["uuid", "master", "slaves"],
        "vlan" => &["uuid", "tagged-PIF", "untagged-PIF", "tag"],
        "pgpu" => &["uuid", "vendor-name", "device-name", "gpu-group-uuid"],
        "vgpu" => &["uuid", "vm-uuid", "device", "gpu-group-uuid"],
        "vgpu-type" => &["uuid", "vendor-name", "model-name", "framebuffer-size"],
        "task" => &[
            "uuid",
            "name-label",
            "name-description",
            "status",
            "progress",
        ],
        _ => &["uuid"],
    }
}

/// One xe parameter of a record: name, qualifier shown (`RO`, `RW`, `MRW`, ...), value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// xe name (`name-label`).
    pub name: String,
    /// Qualifier.
    pub qual: &'static str,
    /// Value as xe prints it.
    pub value: String,
}

/// A reference and its record.
type Rows = Vec<(String, BTreeMap<String, Value>)>;

/// Selected records: reference and xe parameters.
type Selected = Vec<(String, Vec<Param>)>;

/// Records of other classes needed to show references as UUIDs and names.
pub type Lookup = BTreeMap<String, BTreeMap<String, Value>>;

fn text(v: &Value) -> String {
    match v {
        Value::String(s) | Value::DateTime(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Double(d) => d.to_string(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join("; "),
        Value::Struct(m) => m
            .iter()
            .map(|(k, v)| format!("{k}: {}", text(v)))
            .collect::<Vec<_>>()
            .join("; "),
        Value::Nil => String::new(),
    }
}

fn lookup_field(look: &Lookup, r: &str, field: &str) -> String {
    if r == NULL_REF {
        return "<not in database>".into();
    }
    look.get(r)
        .and_then(|rec| rec.get(field))
        .map(text)
        .unwrap_or_else(|| "<not in database>".into())
}

/// The xe parameter of a field that is not a reference.
fn plain_param(cls: &datamodel::Class, f: &datamodel::Field, v: &Value) -> Option<Param> {
    let rw = cls.settable(f);
    let (qual, mut value) = match f.ty {
        Ty::Ref(_) | Ty::RefSet(_) => return None,
        Ty::Map => (if rw { "MRW" } else { "MRO" }, text(v)),
        Ty::StrSet => (if rw { "SRW" } else { "SRO" }, text(v)),
        _ => (if rw { "RW" } else { "RO" }, text(v)),
    };
    if f.name == "power_state" {
        value = value.to_ascii_lowercase();
    }
    Some(Param {
        name: f.name.replace('_', "-"),
        qual,
        value,
    })
}

/// The xe parameters of one record of `class`.
pub fn params_of(class: &str, rec: &BTreeMap<String, Value>, look: &Lookup) -> Vec<Param> {
    let Some(cls) = datamodel::class(class) else {
        return vec![];
    };
    let mut out = Vec::new();
    for f in &cls.fields {
        let Some(v) = rec.get(f.name) else { continue };
        let rw = cls.settable(f);
        let xname = f.name.replace('_', "-");
        match f.ty {
            Ty::Ref(target) => {
                let r = v.as_str().unwrap_or(NULL_REF);
                if f.name.eq_ignore_ascii_case(target) {
                    let base = target.to_ascii_lowercase().replace('_', "-");
                    out.push(Param {
                        name: format!("{base}-uuid"),
                        qual: "RO",
                        value: lookup_field(look, r, "uuid"),
                    });
                    if datamodel::class(target).is_some_and(|c| c.has_name_label()) {
                        out.push(Param {
                            name: format!("{base}-name-label"),
                            qual: "RO",
                            value: lookup_field(look, r, "name_label"),
                        });
                    }
                } else {
                    out.push(Param {
                        name: xname,
                        qual: if rw { "RW" } else { "RO" },
                        value: lookup_field(look, r, "uuid"),
                    });
                }
            }
            Ty::RefSet(_) => {
                let uuids: Vec<String> = v
                    .as_array()
                    .unwrap_or_default()
                    .iter()
                    .map(|x| lookup_field(look, x.as_str().unwrap_or(NULL_REF), "uuid"))
                    .collect();
                out.push(Param {
                    name: xname,
                    qual: "SRO",
                    value: uuids.join("; "),
                });
            }
            _ => out.extend(plain_param(cls, f, v)),
        }
    }
    // Parameters xe derives from related objects.
    let r = |k: &str| {
        rec.get(k)
            .and_then(Value::as_str)
            .unwrap_or(NULL_REF)
            .to_owned()
    };
    match class {
        "PGPU" => {
            let pci = r("PCI");
            for (n, f) in [
                ("vendor-name", "vendor_name"),
                ("device-name", "device_name"),
                ("pci-id", "pci_id"),
            ] {
                out.push(Param {
                    name: n.into(),
                    qual: "RO",
                    value: lookup_field(look, &pci, f),
                });
            }
        }
        "SR" => {
            let pbds = rec
                .get("PBDs")
                .and_then(Value::as_array)
                .unwrap_or_default();
            let host = pbds
                .first()
                .and_then(Value::as_str)
                .and_then(|p| look.get(p))
                .and_then(|p| p.get("host"))
                .and_then(Value::as_str)
                .map(|h| lookup_field(look, h, "name_label"))
                .unwrap_or_else(|| "<shared>".into());
            out.push(Param {
                name: "host".into(),
                qual: "RO",
                value: host,
            });
        }
        _ => {}
    }
    out
}

/// Escapes a value for `--minimal` output as xe does (`cli_printer.ml`: `escape_commas`):
/// `,` becomes `\,` and `\` becomes `\\`.
pub fn escape_commas(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == ',' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Formats records as xe does: per record, keys padded to the longest plus four (the first
/// left-aligned, the rest right-aligned), then `: value`; two blank lines after each record
/// (`cli_printer.ml`: `multi_line_record`).
pub fn format_records(records: &[Vec<Param>]) -> String {
    let mut out = String::new();
    for rec in records {
        let kv: Vec<(String, String)> = rec
            .iter()
            .map(|p| (format!("{} ({:>3})", p.name, p.qual), p.value.clone()))
            .collect();
        out.push_str(&format_kv(&kv));
    }
    out
}

/// One record of keys and values in xe's layout (see [`format_records`]).
pub fn format_kv(rec: &[(String, String)]) -> String {
    let width = rec.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 4;
    let mut out = String::new();
    for (i, (k, v)) in rec.iter().enumerate() {
        if i == 0 {
            out.push_str(&format!("{k:<width$}: {v}\n"));
        } else {
            out.push_str(&format!("{k:>width$}: {v}\n"));
        }
    }
    out.push_str("\n\n");
    out
}

/// Parsed command line.
#[derive(Debug, Default)]
struct Args {
    server: Option<String>,
    port: Option<u16>,
    user: String,
    password: String,
    nossl: bool,
    verify: Option<TlsVerify>,
    socket: Option<PathBuf>,
    minimal: bool,
    force: bool,
    multiple: bool,
    all: bool,
    command: Option<String>,
    /// Bare words after the command (`xe help vm-start`).
    rest: Vec<String>,
    kv: Vec<(String, String)>,
}

impl Args {
    fn set_verify(&mut self, v: TlsVerify) -> Result<(), String> {
        if self.verify.is_some() {
            return Err("--cafile, --fingerprint and --no-verify exclude each other".into());
        }
        self.verify = Some(v);
        Ok(())
    }
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        user: "root".into(),
        ..Args::default()
    };
    let mut it = argv.iter();
    while let Some(x) = it.next() {
        let mut val = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        match x.as_str() {
            "-s" => a.server = Some(val("-s")?),
            "-p" => a.port = Some(val("-p")?.parse().map_err(|_| "-p needs a port number")?),
            "-u" => a.user = val("-u")?,
            "-pw" => a.password = val("-pw")?,
            "-pwf" => {
                let p = val("-pwf")?;
                a.password = std::fs::read_to_string(&p)
                    .map_err(|e| format!("{p}: {e}"))?
                    .trim_end()
                    .to_owned();
            }
            "--socket" => a.socket = Some(PathBuf::from(val("--socket")?)),
            "--nossl" => a.nossl = true,
            "--cafile" => {
                let p = PathBuf::from(val("--cafile")?);
                a.set_verify(TlsVerify::roots_from_pem(&p).map_err(|e| e.to_string())?)?;
            }
            "--fingerprint" => {
                let f = val("--fingerprint")?;
                a.set_verify(TlsVerify::fingerprint(&f).map_err(|e| e.to_string())?)?;
            }
            "--no-verify" => a.set_verify(TlsVerify::Insecure)?,
            "--minimal" => a.minimal = true,
            "--force" => a.force = true,
            "--multiple" => a.multiple = true,
            "--all" => a.all = true,
            s if a.command.is_none() && !s.contains('=') && !s.starts_with('-') => {
                a.command = Some(s.to_owned())
            }
            s if a.command.as_deref() == Some("help") && !s.contains('=') => {
                a.rest.push(s.to_owned())
            }
            s => match s.split_once('=') {
                Some((k, v)) => a.kv.push((k.to_owned(), v.to_owned())),
                None => return Err(format!("unknown argument {s}")),
            },
        }
    }
    Ok(a)
}

/// An xe failure: message and exit code.
#[derive(Debug)]
pub struct XeError(pub String, pub i32);

impl From<Error> for XeError {
    fn from(e: Error) -> Self {
        match e {
            Error::Api(a) => XeError(
                format!(
                    "Error code: {}\nError parameters: {}",
                    a.code,
                    a.params.join(", ")
                ),
                1,
            ),
            e => XeError(format!("Error: {e}"), 1),
        }
    }
}

fn endpoint(a: &Args) -> Endpoint {
    match &a.server {
        Some(s) if a.nossl => Endpoint::Tcp(s.clone(), a.port.unwrap_or(80)),
        Some(s) => Endpoint::Tls(s.clone(), a.port.unwrap_or(443)),
        None => Endpoint::Unix(
            a.socket
                .clone()
                .or_else(|| std::env::var_os("XAPI_SOCKET").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
        ),
    }
}

/// Runs one xe command line (without the program name); output goes to `out`.
pub fn run(argv: &[String], out: &mut dyn Write) -> Result<(), XeError> {
    let a = parse_args(argv).map_err(|e| XeError(e, 1))?;
    let Some(cmd) = a.command.clone() else {
        return Err(XeError(
            "Usage: xe [-s server] [-p port] [-u user] [-pw password] \
             [--cafile pem | --fingerprint sha256 | --no-verify] <command> [args]"
                .into(),
            1,
        ));
    };
    if cmd == "help" {
        // `xe help [--all] [<command>...]`: positional command names come as bare words.
        let names: Vec<String> = a.rest.clone();
        out.write_all(help("xe", &names, a.all, a.minimal).as_bytes())
            .map_err(out_err)?;
        return Ok(());
    }
    if !commands().iter().any(|c| c.name == cmd) {
        return Err(XeError(
            format!("Unknown command: {cmd}\nFor usage run: 'xe help'"),
            1,
        ));
    }
    let mut c = Client::with_tls(
        endpoint(&a),
        a.verify.clone().unwrap_or(TlsVerify::SystemRoots),
    );
    c.login(&a.user, &a.password)?;
    let r = dispatch(&mut c, &cmd, &a, out);
    let _ = c.call("session.logout", &[]);
    r
}

/// Every record of `class`; with `fields`, records holding only those fields.
fn all_records(c: &mut Client, class: &str, fields: Option<&[&str]>) -> Result<Rows, XeError> {
    let v = match fields {
        Some(f) => c.get_all_records_fields(class, f)?,
        None => c.call(&format!("{class}.get_all_records"), &[])?,
    };
    Ok(match v {
        Value::Struct(m) => m
            .into_iter()
            .filter_map(|(k, r)| match r {
                Value::Struct(r) => Some((k, r)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    })
}

/// The plain (not reference) fields of `class` behind the xe parameters `names`, when every
/// one of them is such a field: those need no other class's records.
fn plain_fields(class: &str, names: &BTreeSet<&str>) -> Option<Vec<&'static datamodel::Field>> {
    let cls = datamodel::class(class)?;
    let plain = |f: &datamodel::Field| !matches!(f.ty, Ty::Ref(_) | Ty::RefSet(_));
    // In the record's order, as xe prints them.
    let fields: Vec<&'static datamodel::Field> = cls
        .fields
        .iter()
        .filter(|f| plain(f) && names.contains(f.name.replace('_', "-").as_str()))
        .collect();
    (fields.len() == names.len()).then_some(fields)
}

/// Fetches records of the classes `class`'s references point at.
fn lookup_for(c: &mut Client, class: &str) -> Result<Lookup, XeError> {
    let mut look = Lookup::new();
    let Some(cls) = datamodel::class(class) else {
        return Ok(look);
    };
    let mut targets: Vec<&str> = cls
        .fields
        .iter()
        .filter_map(|f| match f.ty {
            // Only the classes the server implements can be listed.
            Ty::Ref(t) | Ty::RefSet(t) if datamodel::class(t).is_some_and(|c| c.name == t) => {
                Some(t)
            }
            _ => None,
        })
        .collect();
    if class == "SR" {
        targets.push("host");
    }
    targets.sort_unstable();
    targets.dedup();
    for t in targets {
        for (k, r) in all_records(c, t, None)? {
            look.insert(k, r);
        }
    }
    Ok(look)
}

fn out_err(e: std::io::Error) -> XeError {
    XeError(format!("output: {e}"), 1)
}

/// Records of `class` whose xe parameters match every filter.
///
/// With `shown`, only those parameters (and the filtered ones) are computed, and other
/// classes' records are fetched only when one of them needs them.
fn select(
    c: &mut Client,
    class: &str,
    filters: &[(String, String)],
    shown: Option<&[String]>,
) -> Result<(Selected, Lookup), XeError> {
    let plain = shown.and_then(|s| {
        let names: BTreeSet<&str> = s
            .iter()
            .map(String::as_str)
            // A map filter (`other-config:key=value`) reads the map field.
            .chain(
                filters
                    .iter()
                    .map(|(k, _)| k.split(':').next().unwrap_or(k)),
            )
            .chain(["uuid"])
            .collect();
        plain_fields(class, &names)
    });
    let look = match plain {
        Some(_) => Lookup::new(),
        None => lookup_for(c, class)?,
    };
    // With only plain fields to show, only those are read from the reply (and whether a VM is
    // a template).
    let read: Option<Vec<&str>> = plain.as_ref().map(|fields| {
        fields
            .iter()
            .map(|f| f.name)
            .chain((class == "VM").then_some("is_a_template"))
            .collect()
    });
    let mut recs = all_records(c, class, read.as_deref())?;
    if class == "VM" {
        // xe hides templates unless asked for them.
        if !filters.iter().any(|(k, _)| k == "is-a-template") {
            recs.retain(|(_, r)| r.get("is_a_template") != Some(&Value::Bool(true)));
        }
    }
    let mut out: Vec<(String, Vec<Param>)> = recs
        .into_iter()
        .map(|(k, r)| {
            let ps = match &plain {
                Some(fields) => fields
                    .iter()
                    .filter_map(|f| {
                        let cls = datamodel::class(class)?;
                        plain_param(cls, f, r.get(f.name)?)
                    })
                    .collect(),
                None => params_of(class, &r, &look),
            };
            (k, r, ps)
        })
        .filter(|(_, r, ps)| {
            filters.iter().all(|(k, v)| match k.split_once(':') {
                // xe filters a map on one key (cli_operations.ml:
                // `filter_records_on_map_param`).
                Some((m, key)) => datamodel::class(class)
                    .and_then(|cls| cls.fields.iter().find(|f| f.name.replace('_', "-") == m))
                    .and_then(|f| r.get(f.name))
                    .and_then(Value::as_struct)
                    .and_then(|map| map.get(key))
                    .is_some_and(|x| x.as_str() == Some(v.as_str())),
                None => ps.iter().any(|p| &p.name == k && &p.value == v),
            })
        })
        .map(|(k, _, ps)| (k, ps))
        .collect();
    out.sort_by(|a, b| {
        a.1.iter()
            .find(|p| p.name == "uuid")
            .map(|p| &p.value)
            .cmp(&b.1.iter().find(|p| p.name == "uuid").map(|p| &p.value))
    });
    Ok((out, look))
}

fn dispatch(c: &mut Client, cmd: &str, a: &Args, out: &mut dyn Write) -> Result<(), XeError> {
    if let Some(obj) = cmd.strip_suffix("-destroy") {
        if let Some((_, class)) = CLASSES.iter().find(|(o, _)| *o == obj) {
            let uuid =
                a.kv.iter()
                    .find(|(k, _)| k == "uuid")
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| {
                        XeError(
                            "Required parameter not found: uuid\nFor usage run: 'xe help'".into(),
                            1,
                        )
                    })?;
            let r = c.call(&format!("{class}.get_by_uuid"), &[Value::String(uuid)])?;
            c.call(&format!("{class}.destroy"), &[r])?;
            return Ok(());
        }
    }
    for verb in ["list", "get", "set", "add", "remove", "clear"] {
        let suffix = format!("-param-{verb}");
        if let Some(obj) = cmd.strip_suffix(suffix.as_str()) {
            if let Some((_, class)) = CLASSES.iter().find(|(o, _)| *o == obj) {
                return params::run(c, class, verb, a, out);
            }
        }
    }
    if let Some(obj) = cmd.strip_suffix("-list") {
        let class = CLASSES
            .iter()
            .find(|(o, _)| *o == obj)
            .map(|(_, c)| *c)
            .ok_or_else(|| XeError(format!("Unknown command: {cmd}"), 1))?;
        let params_arg =
            a.kv.iter()
                .find(|(k, _)| k == "params")
                .map(|(_, v)| v.clone());
        let filters: Vec<(String, String)> =
            a.kv.iter()
                .filter(|(k, _)| k != "params")
                .cloned()
                .collect();
        let wanted: Option<Vec<String>> = match params_arg.as_deref() {
            Some("all") => None,
            Some(list) => Some(list.split(',').map(str::to_owned).collect()),
            None => Some(
                default_params(obj)
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
            ),
        };
        let (recs, _) = select(c, class, &filters, wanted.as_deref())?;
        // The record's order, not the requested one (cli_operations.ml: `select_fields`
        // filters the record's fields).
        let shown: Vec<Vec<Param>> = recs
            .into_iter()
            .map(|(_, ps)| match &wanted {
                None => ps,
                Some(w) => ps.into_iter().filter(|p| w.contains(&p.name)).collect(),
            })
            .collect();
        if a.minimal {
            let vals: Vec<String> = shown
                .iter()
                .filter_map(|ps| ps.first().map(|p| escape_commas(&p.value)))
                .collect();
            writeln!(out, "{}", vals.join(",")).map_err(out_err)?;
        } else {
            out.write_all(format_records(&shown).as_bytes())
                .map_err(out_err)?;
        }
        return Ok(());
    }
    match cmd {
        "vm-start" | "vm-shutdown" | "vm-reboot" | "vm-pause" | "vm-unpause" | "vm-suspend"
        | "vm-resume" => {
            let filters: Vec<(String, String)> =
                a.kv.iter()
                    .filter(|(k, _)| k != "paused")
                    .map(|(k, v)| {
                        if k == "vm" {
                            ("name-label".to_owned(), v.clone())
                        } else {
                            (k.clone(), v.clone())
                        }
                    })
                    .collect();
            // `vm=` takes a name or a UUID.
            let by_uuid: Option<String> =
                a.kv.iter().find(|(k, _)| k == "vm").map(|(_, v)| v.clone());
            // Only the parameters looked at: plain fields, no other classes fetched.
            let shown = ["name-label".to_owned(), "is-control-domain".to_owned()];
            let (mut recs, _) = select(c, "VM", &filters, Some(&shown))?;
            if recs.is_empty() {
                if let Some(u) = by_uuid {
                    let f: Vec<(String, String)> = vec![("uuid".into(), u)];
                    recs = select(c, "VM", &f, Some(&shown))?.0;
                }
            }
            recs.retain(|(_, ps)| {
                !ps.iter()
                    .any(|p| p.name == "is-control-domain" && p.value == "true")
            });
            if recs.is_empty() {
                return Err(XeError("No matching VMs found".into(), 1));
            }
            if recs.len() > 1 && !a.multiple {
                return Err(XeError(
                    format!("{} VMs match; use --multiple", recs.len()),
                    1,
                ));
            }
            let paused = a.kv.iter().any(|(k, v)| k == "paused" && v == "true");
            for (r, _) in recs {
                let vm = Value::String(r);
                match cmd {
                    "vm-start" => {
                        c.call("VM.start", &[vm, Value::Bool(paused), Value::Bool(a.force)])
                    }
                    "vm-shutdown" if a.force => c.call("VM.hard_shutdown", &[vm]),
                    "vm-shutdown" => c.call("VM.clean_shutdown", &[vm]),
                    "vm-reboot" if a.force => c.call("VM.hard_reboot", &[vm]),
                    "vm-reboot" => c.call("VM.clean_reboot", &[vm]),
                    "vm-pause" => c.call("VM.pause", &[vm]),
                    "vm-suspend" => c.call("VM.suspend", &[vm]),
                    "vm-resume" => c.call(
                        "VM.resume",
                        &[vm, Value::Bool(paused), Value::Bool(a.force)],
                    ),
                    _ => c.call("VM.unpause", &[vm]),
                }?;
            }
            Ok(())
        }
        "bond-create" => {
            let get = |k: &str| a.kv.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
            let net_uuid =
                get("network-uuid").ok_or_else(|| XeError("network-uuid is required".into(), 1))?;
            let pifs =
                get("pif-uuids").ok_or_else(|| XeError("pif-uuids is required".into(), 1))?;
            let net = c.call("network.get_by_uuid", &[Value::String(net_uuid)])?;
            let members: Vec<Value> = pifs
                .split(',')
                .map(|u| c.call("PIF.get_by_uuid", &[Value::str(u)]))
                .collect::<Result<_, _>>()?;
            let bond = c.call(
                "Bond.create",
                &[
                    net,
                    Value::Array(members),
                    Value::String(get("mac").unwrap_or_default()),
                    Value::String(get("mode").unwrap_or_else(|| "balance-slb".into())),
                    Value::Struct(BTreeMap::new()),
                ],
            )?;
            let uuid = c.call("Bond.get_uuid", &[bond])?;
            writeln!(out, "{}", uuid.as_str().unwrap_or_default()).map_err(out_err)?;
            Ok(())
        }
        "network-create" => {
            let get = |k: &str| {
                a.kv.iter()
                    .find(|(x, _)| x == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let mut rec = BTreeMap::new();
            rec.insert("name_label".to_owned(), Value::String(get("name-label")));
            rec.insert(
                "name_description".to_owned(),
                Value::String(get("name-description")),
            );
            let n = c.call("network.create", &[Value::Struct(rec)])?;
            let uuid = c.call("network.get_uuid", &[n])?;
            writeln!(out, "{}", uuid.as_str().unwrap_or_default()).map_err(out_err)?;
            Ok(())
        }
        _ => crate::cli_create::dispatch(c, cmd, &a.kv, out)
            .or_else(|| crate::cli_storage::dispatch(c, cmd, &a.kv, out))
            .or_else(|| crate::cli_memory::dispatch(c, cmd, &a.kv))
            .unwrap_or_else(|| {
                Err(XeError(
                    format!("Unknown command: {cmd}\nFor usage run: 'xe help'"),
                    1,
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_xe() {
        let rec = vec![
            Param {
                name: "uuid".into(),
                qual: "RO",
                value: "u1".into(),
            },
            Param {
                name: "name-label".into(),
                qual: "RW",
                value: "web".into(),
            },
            Param {
                name: "power-state".into(),
                qual: "RO",
                value: "running".into(),
            },
        ];
        let s = format_records(&[rec]);
        assert_eq!(
            s,
            "uuid ( RO)           : u1\n     name-label ( RW): web\n    power-state ( RO): running\n\n\n"
        );
    }

    #[test]
    fn args_parse() {
        let v: Vec<String> = [
            "-s",
            "h",
            "-p",
            "80",
            "-u",
            "root",
            "-pw",
            "x",
            "--nossl",
            "vm-list",
            "params=all",
            "name-label=a b",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let a = parse_args(&v).unwrap();
        assert_eq!(a.command.as_deref(), Some("vm-list"));
        assert_eq!(endpoint(&a), Endpoint::Tcp("h".into(), 80));
        assert_eq!(a.kv[1], ("name-label".into(), "a b".into()));
        assert!(parse_args(&["-p".to_owned()]).is_err());
        assert!(parse_args(&["-p".to_owned(), "x".to_owned()]).is_err());
    }

    #[test]
    fn tls_verification_args() {
        let args = |v: &[&str]| parse_args(&v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        let fp = ["0A"; 32].join(":");
        assert_eq!(
            args(&["--fingerprint", &fp]).unwrap().verify,
            Some(TlsVerify::Fingerprint([10; 32]))
        );
        assert_eq!(
            args(&["--no-verify"]).unwrap().verify,
            Some(TlsVerify::Insecure)
        );
        assert_eq!(args(&["vm-list"]).unwrap().verify, None);
        assert!(args(&["--fingerprint", "zz"]).is_err());
        assert!(args(&["--cafile", "/nonexistent/ca.pem"]).is_err());
        assert!(args(&["--no-verify", "--fingerprint", &fp]).is_err());
    }
}
