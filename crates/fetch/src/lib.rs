//! Every outgoing HTTP request of Цифровой РОП goes through here.
//!
//! The [`UrlGuard`] refuses links to loopback, link-local (cloud metadata),
//! unspecified, multicast and reserved addresses, and — unless the
//! administrator allows them — private networks. It checks the literal host,
//! every resolved address (through the client's DNS resolver, so the checked
//! address is the one connected to) and every redirect.

mod client;
mod download;
mod guard;
mod probe;
mod sniff;

pub use client::{forbidden_cause, AudioClients, ClientConfig, GuardedClient};
pub use download::{download_to_file, DownloadError, DownloadLimits, Downloaded};
pub use guard::{AddressClass, Forbidden, UrlGuard};
pub use probe::{probe, ProbeLimits, ProbeOutcome};
pub use sniff::{sniff, AudioFormat, Sniffed};
