//! XenBus device framework: state machine, directory conventions, backend and frontend drivers.
