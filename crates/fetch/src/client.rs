use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect;
use url::Url;

use crate::guard::{Forbidden, ResolveError, UrlGuard};

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub guard: UrlGuard,
    pub connect_timeout: Duration,
    /// Longest pause between two reads of a response body.
    pub read_timeout: Duration,
    pub max_redirects: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            guard: UrlGuard::default(),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
            max_redirects: 5,
        }
    }
}

/// Resolves names through the guard, so the address that is checked is the
/// address that is connected to (no DNS rebinding between check and use).
struct GuardedResolver(UrlGuard);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0;
        Box::pin(async move {
            let addrs = guard.resolve(name.as_str(), 0).await.map_err(
                |e| -> Box<dyn StdError + Send + Sync> {
                    match e {
                        ResolveError::Forbidden(forbidden) => Box::new(forbidden),
                        other => Box::new(other),
                    }
                },
            )?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client every outgoing request uses. The guard sees the first
/// link's literal address here, every host name when it is resolved, and
/// every redirect in the redirect policy: reqwest never resolves an IP
/// literal, so the check at [`GuardedClient::get`] is not optional.
#[derive(Clone)]
pub struct GuardedClient {
    client: reqwest::Client,
    guard: UrlGuard,
}

impl GuardedClient {
    pub fn new(config: &ClientConfig) -> Self {
        let guard = config.guard;
        let max_redirects = config.max_redirects;
        let policy = redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= max_redirects {
                attempt.error(format!("more than {max_redirects} redirects"))
            } else if let Err(forbidden) = guard.check_url(attempt.url()) {
                attempt.error(forbidden)
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            // A proxy would resolve names itself, bypassing the guard.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver(guard)))
            .redirect(policy)
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .user_agent(concat!("rop/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with these fixed settings always builds");
        Self { client, guard }
    }

    /// A GET request for `url`, unless the guard refuses the link as written.
    pub fn get(&self, url: &Url) -> Result<reqwest::RequestBuilder, Forbidden> {
        self.guard.check_url(url)?;
        Ok(self.client.get(url.clone()))
    }

    /// A POST request to `url` (webhooks), unless the guard refuses the link
    /// as written.
    pub fn post(&self, url: &Url) -> Result<reqwest::RequestBuilder, Forbidden> {
        self.guard.check_url(url)?;
        Ok(self.client.post(url.clone()))
    }

    /// A request with any method (a CRM's PATCH), unless the guard refuses
    /// the link as written.
    pub fn request(
        &self,
        method: reqwest::Method,
        url: &Url,
    ) -> Result<reqwest::RequestBuilder, Forbidden> {
        self.guard.check_url(url)?;
        Ok(self.client.request(method, url.clone()))
    }

    /// The guard this client enforces.
    pub fn guard(&self) -> UrlGuard {
        self.guard
    }
}

/// The configured client for audio links, and the same client with private
/// networks allowed: an administrator may allow on-premise CRMs in the
/// connection settings, and the choice applies at once, without a restart.
#[derive(Clone)]
pub struct AudioClients {
    configured: GuardedClient,
    with_private: GuardedClient,
}

impl AudioClients {
    pub fn new(config: &ClientConfig) -> Self {
        let mut private = config.clone();
        private.guard.allow_private = true;
        Self {
            configured: GuardedClient::new(config),
            with_private: GuardedClient::new(&private),
        }
    }

    /// The client for links when the connection settings say
    /// `allow_private_networks` (the configuration may allow them anyway).
    pub fn client(&self, allow_private_networks: bool) -> &GuardedClient {
        if allow_private_networks {
            &self.with_private
        } else {
            &self.configured
        }
    }
}

/// The guard's refusal inside a request error, if that is what failed it.
pub fn forbidden_cause(error: &reqwest::Error) -> Option<&Forbidden> {
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(cause) = source {
        if let Some(forbidden) = cause.downcast_ref::<Forbidden>() {
            return Some(forbidden);
        }
        source = cause.source();
    }
    None
}

/// What a failed request means for the caller: the guard refused it, or it
/// is worth trying again later. Probe and download judge alike through this.
pub(crate) enum RequestFailure<'a> {
    Forbidden(&'a Forbidden),
    Transient(String),
}

pub(crate) fn classify_failure(error: &reqwest::Error) -> RequestFailure<'_> {
    if let Some(forbidden) = forbidden_cause(error) {
        return RequestFailure::Forbidden(forbidden);
    }
    let chain = error_chain(error);
    RequestFailure::Transient(if error.is_redirect() {
        format!("redirect failed: {chain}")
    } else {
        chain
    })
}

/// Statuses that say "not now" rather than "never": 5xx, 408, 429.
pub(crate) fn is_transient_status(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
}

/// reqwest's own message is often just "error sending request"; the cause
/// that says what went wrong is further down the chain.
pub(crate) fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
