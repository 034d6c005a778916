//! `xe help`, `xe help <command>`, `xe help --all`: the command table and xe's help layout
//! (`ocaml/xapi-cli-server/cli_frontend.ml`: `rio_help`, `make_list`).

use super::{escape_commas, format_kv, CLASSES};

/// One xe command: name, required and optional parameters, what it does, and whether the
/// common list shows it.
#[derive(Debug, Clone)]
pub struct Command {
    /// Name (`vm-param-get`).
    pub name: String,
    /// Required parameters.
    pub reqd: Vec<&'static str>,
    /// Optional parameters.
    pub optn: Vec<&'static str>,
    /// Description.
    pub help: String,
    /// Shown in `xe help` (the common list); every command is in `xe help --all`.
    pub standard: bool,
}

fn cmd(
    name: impl Into<String>,
    reqd: &[&'static str],
    optn: &[&'static str],
    help: String,
) -> Command {
    Command {
        name: name.into(),
        reqd: reqd.to_vec(),
        optn: optn.to_vec(),
        help,
        standard: false,
    }
}

/// Every command this `xe` knows, sorted by name.
pub fn commands() -> Vec<Command> {
    let mut out = Vec::new();
    for (obj, class) in CLASSES {
        // `<object>-destroy` where the datamodel has `<class>.destroy` and the server does it.
        if crate::datamodel::class(class).is_some_and(|c| c.destroy) {
            out.push(cmd(
                format!("{obj}-destroy"),
                &["uuid"],
                &[],
                format!("Destroys the {class} object."),
            ));
        }
        let mut list = cmd(
            format!("{obj}-list"),
            &[],
            &["params"],
            format!(
                "Lists the {class} objects: the parameters named by params= (all: every one), \
                 filtered by any parameter=value."
            ),
        );
        list.standard = true;
        out.push(list);
        out.push(cmd(
            format!("{obj}-param-list"),
            &["uuid"],
            &[],
            format!("Prints every parameter of the {class} object."),
        ));
        out.push(cmd(
            format!("{obj}-param-get"),
            &["uuid", "param-name"],
            &["param-key"],
            format!("Prints one parameter of the {class} object (one key of a map parameter)."),
        ));
        out.push(cmd(
            format!("{obj}-param-set"),
            &["uuid"],
            &[],
            format!(
                "Sets parameters of the {class} object: name=value, or map-name:key=value for \
                 one key of a map."
            ),
        ));
        out.push(cmd(
            format!("{obj}-param-add"),
            &["uuid", "param-name"],
            &["param-key"],
            format!(
                "Adds param-key to a set parameter, or key=value pairs to a map parameter, of \
                 the {class} object."
            ),
        ));
        out.push(cmd(
            format!("{obj}-param-remove"),
            &["uuid", "param-name", "param-key"],
            &[],
            format!("Removes a key from a set or map parameter of the {class} object."),
        ));
        out.push(cmd(
            format!("{obj}-param-clear"),
            &["uuid", "param-name"],
            &[],
            format!(
                "Empties a set or map parameter, or a string parameter, of the {class} object."
            ),
        ));
    }
    for (name, what, optn) in [
        (
            "vm-start",
            "Starts",
            &["vm", "paused", "force", "multiple"][..],
        ),
        (
            "vm-shutdown",
            "Shuts down (--force: hard)",
            &["vm", "force", "multiple"][..],
        ),
        (
            "vm-reboot",
            "Reboots (--force: hard)",
            &["vm", "force", "multiple"][..],
        ),
        ("vm-pause", "Pauses", &["vm", "multiple"][..]),
        ("vm-unpause", "Unpauses", &["vm", "multiple"][..]),
        (
            "vm-suspend",
            "Suspends (to the suspend image)",
            &["vm", "multiple"][..],
        ),
        (
            "vm-resume",
            "Resumes",
            &["vm", "paused", "force", "multiple"][..],
        ),
    ] {
        let mut c = cmd(
            name,
            &[],
            optn,
            format!("{what} the VMs selected by vm=<name or uuid> or by parameter=value filters."),
        );
        c.standard = true;
        out.push(c);
    }
    out.push(cmd(
        "bond-create",
        &["network-uuid", "pif-uuids"],
        &["mac", "mode"],
        "Bonds the PIFs (comma-separated UUIDs) onto the network; prints the bond's UUID.".into(),
    ));
    let mut net = cmd(
        "network-create",
        &["name-label"],
        &["name-description"],
        "Creates a network; prints its UUID.".into(),
    );
    net.standard = true;
    out.push(net);
    for (name, reqd, optn, help) in STORAGE {
        out.push(cmd(*name, reqd, optn, (*help).into()));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The command names, wrapped as xe does: four spaces of indent, `, ` between names, a new
/// line when a name would pass column 74.
fn make_list(names: &[&str]) -> Vec<String> {
    let indent = "    ";
    let mut lines = Vec::new();
    let Some((first, rest)) = names.split_first() else {
        return vec![indent.to_owned()];
    };
    let mut cur = format!("{indent}{first}");
    for n in rest {
        if cur.len() + n.len() > 74 {
            lines.push(std::mem::replace(&mut cur, format!("{indent}{n}")));
        } else {
            cur = format!("{cur}, {n}");
        }
    }
    lines.push(cur);
    lines
}

fn usage(argv0: &str) -> String {
    format!(
        "Usage:\n  {argv0} <command>\n    [ -s <server> ]            XenServer host\n    \
         [ -p <port> ]              XenServer port number\n    \
         [ -u <username> -pw <password> | -pwf <password file> ]\n                               \
         User authentication (password or file)\n    \
         [ --nossl ]                Disable SSL/TLS\n    \
         [ <other arguments> ... ]  Command-specific options\n\n\
         To get help on a specific command:\n  {argv0} help <command>\n\n"
    )
}

/// The output of `xe help [--all] [<command>...]` (`--minimal`: the names, comma-separated).
pub fn help(argv0: &str, names: &[String], all: bool, minimal: bool) -> String {
    let table = commands();
    let mut out = String::new();
    if !names.is_empty() {
        for n in names {
            match table.iter().find(|c| &c.name == n) {
                Some(c) => {
                    let rec = [
                        ("command name        ".to_owned(), c.name.clone()),
                        ("reqd params     ".to_owned(), c.reqd.join(", ")),
                        ("optional params ".to_owned(), c.optn.join(", ")),
                        ("description     ".to_owned(), c.help.clone()),
                    ];
                    out.push_str(&format_kv(&rec));
                }
                None => out.push_str(&format!("Unknown command '{n}'\n")),
            }
        }
        return out;
    }
    let shown: Vec<&str> = table
        .iter()
        .filter(|c| all || c.standard)
        .map(|c| c.name.as_str())
        .collect();
    if minimal {
        let names: Vec<String> = shown.iter().map(|n| escape_commas(n)).collect();
        return format!("{}\n", names.join(","));
    }
    if all {
        let (host, rest): (Vec<&str>, Vec<&str>) =
            shown.iter().partition(|n| n.starts_with("host-"));
        let (vm, other): (Vec<&str>, Vec<&str>) = rest.iter().partition(|n| n.starts_with("vm-"));
        out.push_str(&usage(argv0));
        out.push_str("Full command list\n-----------------\n\n");
        for group in [host, vm] {
            for l in make_list(&group) {
                out.push_str(&l);
                out.push('\n');
            }
            out.push_str("    \n");
        }
        for l in make_list(&other) {
            out.push_str(&l);
            out.push('\n');
        }
    } else {
        out.push_str(&usage(argv0));
        out.push_str(&format!(
            "To get a full listing of commands:\n  {argv0} help --all\n\n\
             Common command list\n-------------------\n\n"
        ));
        for l in make_list(&shown) {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

/// The create commands (`crate::cli_create`) and the storage commands
/// (`crate::cli_storage`), with cli_frontend.ml's parameters.
type CmdSpec = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    &'static str,
);
const STORAGE: &[CmdSpec] = &[
    (
        "vm-create",
        &["name-label", "memory"],
        &["VCPUs", "PV-kernel", "PV-ramdisk", "PV-args"],
        "Creates a PV VM (memory in MiB); prints its UUID.",
    ),
    (
        "vm-memory-dynamic-range-set",
        &["min", "max"],
        &["uuid", "vm"],
        "Sets a VM's dynamic memory range (bytes, or with KiB/MiB/GiB).",
    ),
    (
        "vm-memory-target-set",
        &["target"],
        &["uuid", "vm"],
        "Sets a running VM's memory target (bytes, or with KiB/MiB/GiB).",
    ),
    (
        "vdi-create",
        &["sr-uuid", "name-label", "virtual-size"],
        &["type", "sm-config:"],
        "Creates a VDI on the SR (sm-config:path= names an image to serve); prints its UUID.",
    ),
    (
        "vbd-create",
        &["vm-uuid", "vdi-uuid", "device"],
        &["mode", "type", "other-config:"],
        "Creates a VBD of the VDI for the VM; prints its UUID.",
    ),
    (
        "vif-create",
        &["vm-uuid", "network-uuid", "device"],
        &["mac"],
        "Creates a VIF of the VM on the network; prints its UUID.",
    ),
    (
        "sr-create",
        &["name-label", "type"],
        &[
            "host-uuid",
            "device-config:",
            "shared",
            "physical-size",
            "content-type",
            "sm-config:",
            "name-description",
        ],
        "Creates an SR on the disk given in device-config; prints its UUID.",
    ),
    (
        "sr-forget",
        &["uuid"],
        &[],
        "Forgets an SR (its data stays).",
    ),
    (
        "sr-scan",
        &["uuid"],
        &[],
        "Syncs the SR's VDI records with what is on disk.",
    ),
    (
        "pbd-plug",
        &["uuid"],
        &[],
        "Attempts to plug in the PBD to the host.",
    ),
    (
        "pbd-unplug",
        &["uuid"],
        &[],
        "Attempts to unplug the PBD from the host.",
    ),
    ("vdi-resize", &["uuid", "disk-size"], &[], "Resizes a VDI."),
    (
        "vdi-snapshot",
        &["uuid"],
        &["driver-params:"],
        "Snapshots a VDI; prints the snapshot's UUID.",
    ),
    (
        "vdi-clone",
        &["uuid"],
        &["driver-params:", "new-name-label", "new-name-description"],
        "Clones a VDI; prints the clone's UUID.",
    ),
    (
        "vdi-copy",
        &["uuid", "sr-uuid"],
        &[],
        "Copies a VDI into an SR; prints the copy's UUID.",
    ),
    (
        "vm-snapshot",
        &["new-name-label"],
        &["new-name-description", "vm", "uuid"],
        "Snapshots a VM and its disks; prints the snapshot's UUID.",
    ),
    (
        "vm-clone",
        &["new-name-label"],
        &["new-name-description", "vm", "uuid"],
        "Clones a halted VM, its disks sharing data; prints the clone's UUID.",
    ),
    (
        "vm-copy",
        &["new-name-label"],
        &["new-name-description", "sr-uuid", "vm", "uuid"],
        "Copies a halted VM with full copies of its disks; prints the copy's UUID.",
    ),
    (
        "snapshot-revert",
        &[],
        &["uuid", "snapshot-uuid"],
        "Reverts a VM to the state of a snapshot.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_wrap_as_xe_wraps() {
        // cli_frontend.ml `make_list`: a name goes on a new line when the line plus the name
        // passes 74 characters; no trailing comma at a line's end.
        let names: Vec<String> = (0..20).map(|i| format!("command-{i:02}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let lines = make_list(&refs);
        assert!(lines.len() > 1);
        for l in &lines {
            assert!(l.starts_with("    command-"), "{l}");
            assert!(!l.ends_with(','), "{l}");
            assert!(l.len() <= 74 + "command-00".len(), "{l}");
        }
        assert_eq!(lines.join(", ").matches("command-").count(), 20);
    }

    #[test]
    fn help_for_a_command_is_xes_record() {
        let h = help("xe", &["vm-param-get".into()], false, false);
        assert_eq!(
            h.lines().take(3).collect::<Vec<_>>(),
            [
                "command name            : vm-param-get",
                "        reqd params     : uuid, param-name",
                "        optional params : param-key",
            ]
        );
        assert_eq!(
            help("xe", &["nope".into()], false, false),
            "Unknown command 'nope'\n"
        );
        let all = help("xe", &[], true, true);
        for c in ["vm-param-set", "network-param-clear", "task-list"] {
            assert!(all.trim_end().split(',').any(|x| x == c), "{c}");
        }
    }
}
