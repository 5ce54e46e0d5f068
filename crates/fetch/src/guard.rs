use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

/// What kind of network an address belongs to, for the SSRF policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    /// RFC 1918, carrier-grade NAT, IPv6 unique-local and site-local.
    Private,
    Loopback,
    /// 169.254/16 and fe80::/10 — where cloud metadata services live.
    LinkLocal,
    Unspecified,
    Multicast,
    /// Broadcast, documentation, benchmarking and other reserved ranges.
    Reserved,
}

impl AddressClass {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private network",
            Self::Loopback => "loopback",
            Self::LinkLocal => "link-local",
            Self::Unspecified => "unspecified",
            Self::Multicast => "multicast",
            Self::Reserved => "reserved",
        }
    }

    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => classify_v4(v4),
            IpAddr::V6(v6) => classify_v6(v6),
        }
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        (0, _, _) => AddressClass::Unspecified,
        (127, _, _) => AddressClass::Loopback,
        (169, 254, _) => AddressClass::LinkLocal,
        (10, _, _) | (192, 168, _) => AddressClass::Private,
        (172, 16..=31, _) => AddressClass::Private,
        (100, 64..=127, _) => AddressClass::Private,
        (192, 0, 0) | (198, 18..=19, _) => AddressClass::Private,
        (224..=239, _, _) => AddressClass::Multicast,
        (240..=255, _, _) => AddressClass::Reserved,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    // Forms that carry an IPv4 address are judged by that address, so that
    // ::ffff:127.0.0.1 is as loopback as 127.0.0.1 is.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let segments = ip.segments();
    let embedded_low = Ipv4Addr::new(
        (segments[6] >> 8) as u8,
        segments[6] as u8,
        (segments[7] >> 8) as u8,
        segments[7] as u8,
    );
    match segments {
        // IPv4-compatible ::a.b.c.d (deprecated, still routed by some stacks).
        [0, 0, 0, 0, 0, 0, _, _] => classify_v4(embedded_low),
        // NAT64 well-known prefix 64:ff9b::/96.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => classify_v4(embedded_low),
        // 6to4 2002:a.b.c.d::/48.
        [0x2002, hi, lo, ..] => classify_v4(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        // Teredo 2001::/32 hides an IPv4 address; documentation 2001:db8::/32.
        [0x2001, 0, ..] | [0x2001, 0xdb8, ..] => AddressClass::Reserved,
        [first, ..] if first & 0xff00 == 0xff00 => AddressClass::Multicast,
        [first, ..] if first & 0xffc0 == 0xfe80 => AddressClass::LinkLocal,
        [first, ..] if first & 0xffc0 == 0xfec0 => AddressClass::Private,
        [first, ..] if first & 0xfe00 == 0xfc00 => AddressClass::Private,
        _ => AddressClass::Public,
    }
}

/// Why a link may not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    #[error("only http and https links are allowed, not `{0}`")]
    Scheme(String),
    #[error("the link has no host")]
    NoHost,
    #[error("{host} is a {} address ({ip}), which is not allowed", .class.describe())]
    Address {
        host: String,
        ip: IpAddr,
        class: AddressClass,
    },
}

/// The server-side request forgery policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UrlGuard {
    /// On-premise CRMs live in private networks; the administrator decides.
    pub allow_private: bool,
    /// For tests and single-host setups only.
    pub allow_loopback: bool,
}

impl UrlGuard {
    pub fn allows(&self, ip: IpAddr) -> Result<(), AddressClass> {
        match AddressClass::of(ip) {
            AddressClass::Public => Ok(()),
            AddressClass::Private if self.allow_private => Ok(()),
            AddressClass::Loopback if self.allow_loopback => Ok(()),
            class => Err(class),
        }
    }

    fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), Forbidden> {
        self.allows(ip).map_err(|class| Forbidden::Address {
            host: host.to_owned(),
            ip,
            class,
        })
    }

    /// Checks what can be checked without the network: scheme and literal
    /// IP hosts. Host names are checked when resolved.
    pub fn check_url(&self, url: &Url) -> Result<(), Forbidden> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Forbidden::Scheme(url.scheme().to_owned()));
        }
        match url.host() {
            None => Err(Forbidden::NoHost),
            Some(Host::Domain(_)) => Ok(()),
            Some(Host::Ipv4(ip)) => self.check_ip(&ip.to_string(), IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.check_ip(&ip.to_string(), IpAddr::V6(ip)),
        }
    }

    /// Resolves a host name and refuses it if any of its addresses is
    /// forbidden (a name that mixes public and internal addresses is a
    /// rebinding attempt, not a configuration we want to guess about).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| ResolveError::Lookup(host.to_owned(), e.to_string()))?
            .collect();
        if addrs.is_empty() {
            return Err(ResolveError::Lookup(host.to_owned(), "no addresses".into()));
        }
        for addr in &addrs {
            self.check_ip(host, addr.ip())?;
        }
        Ok(addrs)
    }

    /// The full upload-time check: scheme, literal address or every resolved
    /// address. A name that does not resolve is not refused here (DNS may be
    /// down for a moment); the download will retry it.
    pub async fn check_url_resolved(&self, url: &Url) -> Result<(), Forbidden> {
        self.check_url(url)?;
        if let Some(Host::Domain(domain)) = url.host() {
            let port = url.port_or_known_default().unwrap_or(80);
            if let Err(ResolveError::Forbidden(forbidden)) = self.resolve(domain, port).await {
                return Err(forbidden);
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    #[error("cannot resolve {0}: {1}")]
    Lookup(String, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ip: &str) -> AddressClass {
        AddressClass::of(ip.parse().unwrap())
    }

    #[test]
    fn classifies_the_ranges_that_matter() {
        for (ip, expected) in [
            ("8.8.8.8", AddressClass::Public),
            ("127.0.0.1", AddressClass::Loopback),
            ("127.255.0.9", AddressClass::Loopback),
            ("169.254.169.254", AddressClass::LinkLocal),
            ("10.1.2.3", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("172.31.255.255", AddressClass::Private),
            ("172.32.0.1", AddressClass::Public),
            ("192.168.1.1", AddressClass::Private),
            ("100.64.0.1", AddressClass::Private),
            ("0.0.0.0", AddressClass::Unspecified),
            ("224.0.0.1", AddressClass::Multicast),
            ("255.255.255.255", AddressClass::Reserved),
            ("::1", AddressClass::Loopback),
            ("::", AddressClass::Unspecified),
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("::ffff:7f00:1", AddressClass::Loopback),
            ("::ffff:169.254.169.254", AddressClass::LinkLocal),
            ("::ffff:10.0.0.1", AddressClass::Private),
            ("::127.0.0.1", AddressClass::Loopback),
            ("64:ff9b::a9fe:a9fe", AddressClass::LinkLocal),
            ("2002:c0a8:0101::1", AddressClass::Private),
            ("fe80::1", AddressClass::LinkLocal),
            ("fc00::1", AddressClass::Private),
            ("fd12:3456::1", AddressClass::Private),
            ("ff02::1", AddressClass::Multicast),
            ("2001:db8::1", AddressClass::Reserved),
            ("2a00:1450:4001::1", AddressClass::Public),
        ] {
            assert_eq!(class(ip), expected, "{ip}");
        }
    }

    #[test]
    fn policy_follows_the_switches() {
        let strict = UrlGuard::default();
        let lenient = UrlGuard {
            allow_private: true,
            allow_loopback: true,
        };
        for ip in ["127.0.0.1", "10.0.0.1", "::1"] {
            assert!(strict.allows(ip.parse().unwrap()).is_err(), "{ip}");
            assert!(lenient.allows(ip.parse().unwrap()).is_ok(), "{ip}");
        }
        for ip in ["169.254.169.254", "0.0.0.0", "224.0.0.1", "fe80::1"] {
            assert!(lenient.allows(ip.parse().unwrap()).is_err(), "{ip}");
        }
    }

    #[test]
    fn literal_hosts_in_every_spelling_are_caught() {
        let guard = UrlGuard::default();
        for link in [
            "http://127.0.0.1/a.mp3",
            "http://2130706433/a.mp3",
            "http://0x7f.1/a.mp3",
            "http://0177.0.0.1/a.mp3",
            "http://[::1]/a.mp3",
            "http://[::ffff:127.0.0.1]/a.mp3",
            "http://[::ffff:a9fe:a9fe]/latest/meta-data",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.5/a.mp3",
            "http://192.168.0.10:8080/a.mp3",
            "https://0.0.0.0/a.mp3",
        ] {
            let url = Url::parse(link).unwrap();
            assert!(
                matches!(guard.check_url(&url), Err(Forbidden::Address { .. })),
                "{link}"
            );
        }
        for link in [
            "ftp://example.com/a.mp3",
            "file:///etc/passwd",
            "gopher://x/",
        ] {
            let url = Url::parse(link).unwrap();
            assert!(
                matches!(guard.check_url(&url), Err(Forbidden::Scheme(_))),
                "{link}"
            );
        }
        assert!(guard
            .check_url(&Url::parse("https://crm.example.com/a.mp3").unwrap())
            .is_ok());
    }

    #[tokio::test]
    async fn resolved_names_are_checked() {
        let guard = UrlGuard::default();
        let url = Url::parse("http://localhost:9/a.mp3").unwrap();
        assert!(matches!(
            guard.check_url_resolved(&url).await,
            Err(Forbidden::Address {
                class: AddressClass::Loopback,
                ..
            })
        ));
        let allowed = UrlGuard {
            allow_loopback: true,
            ..UrlGuard::default()
        };
        assert!(allowed.check_url_resolved(&url).await.is_ok());
    }
}
