//! Sans-IO pieces of the Postgres wire protocol: parse from a byte slice or buffer, encode into a
//! buffer, never touch a socket. Declared lengths are checked against limits before anything is
//! allocated for them.

pub mod backend;
pub mod frame;
pub mod messages;
pub mod scan;
pub mod scram;
pub mod startup;
