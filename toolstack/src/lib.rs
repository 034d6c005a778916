//! A thin toolstack: the XAPI object model, a XenAPI server (xapi) and an xe CLI.
