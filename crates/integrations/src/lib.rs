//! Integrations with the systems our customers run (PRODUCT.md §8):
//! telephony and CRMs, each behind its own module. Every request goes out
//! through the SSRF guard; every fact about the outside APIs comes from
//! integrations.md.

pub mod zadarma;
