//! The XenBus device state machine (`enum xenbus_state` of `xen/io/xenbus.h`).

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// State of one end of a split device, as written to its `state` node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum XenbusState {
    /// No state written yet (or the node is missing).
    Unknown = xen_sys::XenbusStateUnknown,
    /// The end is being set up.
    Initialising = xen_sys::XenbusStateInitialising,
    /// Backend: ready for the frontend's details (features written, waiting).
    InitWait = xen_sys::XenbusStateInitWait,
    /// Frontend: rings and event channels published.
    Initialised = xen_sys::XenbusStateInitialised,
    /// Serving.
    Connected = xen_sys::XenbusStateConnected,
    /// Shutting down: the peer should disconnect.
    Closing = xen_sys::XenbusStateClosing,
    /// Disconnected.
    Closed = xen_sys::XenbusStateClosed,
    /// Online reconfiguration in progress.
    Reconfiguring = xen_sys::XenbusStateReconfiguring,
    /// Online reconfiguration done.
    Reconfigured = xen_sys::XenbusStateReconfigured,
}

impl XenbusState {
    /// Every state, in ABI order.
    pub const ALL: [XenbusState; 9] = [
        XenbusState::Unknown,
        XenbusState::Initialising,
        XenbusState::InitWait,
        XenbusState::Initialised,
        XenbusState::Connected,
        XenbusState::Closing,
        XenbusState::Closed,
        XenbusState::Reconfiguring,
        XenbusState::Reconfigured,
    ];

    /// The state with ABI value `raw`.
    pub fn from_raw(raw: u32) -> Option<XenbusState> {
        Self::ALL.into_iter().find(|s| *s as u32 == raw)
    }

    /// The ABI value.
    pub const fn raw(self) -> u32 {
        self as u32
    }

    /// Reads a `state` node's value the way Linux's `xenbus_read_driver_state` does: a
    /// missing or unparsable node is [`XenbusState::Unknown`].
    pub fn from_node(value: Option<&str>) -> XenbusState {
        value
            .and_then(|v| v.trim_end_matches('\0').trim().parse().ok())
            .unwrap_or(XenbusState::Unknown)
    }

    /// True when moving from `self` to `next` is allowed. Writing the current state again is
    /// allowed (a no-op, as `xenbus_switch_state` treats it); any state may move to `Closing`
    /// or `Closed`; `Closed` may restart (`Initialising`/`InitWait`) for a reconnect, or fall
    /// back to `Unknown` when the device goes away.
    pub fn can_transition_to(self, next: XenbusState) -> bool {
        use XenbusState::*;
        if self == next {
            return true;
        }
        match (self, next) {
            (Closing, Closed) => true,
            (Closing, _) => false,
            (_, Closing) | (_, Closed) => true,
            (Unknown, Initialising | InitWait) => true,
            (Initialising, InitWait | Initialised | Connected) => true,
            (InitWait, Initialised | Connected) => true,
            (Initialised, Connected) => true,
            (Connected, Reconfiguring) => true,
            (Reconfiguring, Reconfigured) => true,
            (Reconfigured, Connected) => true,
            (Closed, Initialising | InitWait | Unknown) => true,
            _ => false,
        }
    }

    /// `Ok(next)` when the transition is legal, else [`Error::IllegalTransition`].
    pub fn transition(self, next: XenbusState) -> Result<XenbusState, Error> {
        if self.can_transition_to(next) {
            Ok(next)
        } else {
            Err(Error::IllegalTransition {
                from: self,
                to: next,
            })
        }
    }
}

impl fmt::Display for XenbusState {
    /// Writes the decimal ABI value, the form stored in xenstore.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.raw())
    }
}

impl FromStr for XenbusState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        s.parse::<u32>()
            .ok()
            .and_then(XenbusState::from_raw)
            .ok_or_else(|| Error::BadValue {
                path: "state".into(),
                value: s.into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::XenbusState::*;
    use super::*;

    #[test]
    fn values_match_the_abi_and_round_trip() {
        for (i, s) in XenbusState::ALL.iter().enumerate() {
            assert_eq!(s.raw(), i as u32);
            assert_eq!(XenbusState::from_raw(i as u32), Some(*s));
            assert_eq!(s.to_string().parse::<XenbusState>().unwrap(), *s);
        }
        assert_eq!(XenbusState::from_raw(9), None);
        assert!("x".parse::<XenbusState>().is_err());
        assert!("9".parse::<XenbusState>().is_err());
        assert_eq!(XenbusState::from_node(None), Unknown);
        assert_eq!(XenbusState::from_node(Some("4")), Connected);
        assert_eq!(XenbusState::from_node(Some("junk")), Unknown);
    }

    #[test]
    fn handshake_paths_are_legal() {
        let backend = [
            Unknown,
            Initialising,
            InitWait,
            Connected,
            Closing,
            Closed,
            InitWait,
        ];
        let frontend = [
            Unknown,
            Initialising,
            Initialised,
            Connected,
            Closing,
            Closed,
        ];
        for path in [&backend[..], &frontend[..]] {
            for w in path.windows(2) {
                assert!(w[0].can_transition_to(w[1]), "{:?} -> {:?}", w[0], w[1]);
            }
        }
        let reconf = [Connected, Reconfiguring, Reconfigured, Connected];
        for w in reconf.windows(2) {
            assert!(w[0].transition(w[1]).is_ok());
        }
    }

    #[test]
    fn illegal_transitions_are_refused() {
        for (a, b) in [
            (Connected, Initialising),
            (Connected, InitWait),
            (Closing, Connected),
            (Closing, InitWait),
            (Unknown, Connected),
            (Initialised, InitWait),
            (Reconfiguring, Connected),
            (Closed, Connected),
        ] {
            assert!(!a.can_transition_to(b), "{a:?} -> {b:?}");
            assert!(matches!(
                a.transition(b),
                Err(Error::IllegalTransition { from, to }) if from == a && to == b
            ));
        }
        // Every state can be closed.
        for s in XenbusState::ALL {
            assert!(s.can_transition_to(Closed));
        }
    }
}
