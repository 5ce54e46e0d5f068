//! Helpers shared by this crate's test binaries; each uses a part.
#![allow(dead_code)]

pub mod gbnf;
pub mod schema;
