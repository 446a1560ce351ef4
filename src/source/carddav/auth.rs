//! Who gets the credentials, and how: the configured origin, or another host of the same site
//! over https (iCloud answers from `pNN-contacts.icloud.com` for `contacts.icloud.com`), never
//! another site and never plain http elsewhere. Sent unasked only over https to the configured
//! origin; otherwise only in answer to a server's challenge, in the scheme it names (Digest
//! before Basic). What a server asked for is remembered per origin, so that the next request
//! (and the daemon's next poll) carries it at once instead of costing a 401 each time.

use std::collections::HashMap;

use reqwest::Url;

/// What the user gave to log in with.
#[derive(Clone)]
pub(super) enum Secret {
    /// User name and password, for Basic or Digest.
    Password { user: String, password: String },
    /// An OAuth 2.0 access token (RFC 6750), or one a program printed: it follows the same
    /// rules of who may receive it.
    Bearer(String),
}

/// A challenge this client can answer, best first.
#[derive(Clone, Debug)]
enum Challenge {
    Digest(Box<digest_auth::WwwAuthenticateHeader>),
    Basic,
    Bearer,
}

pub(super) struct Auth {
    /// The configured URL's origin (`https://host:443`).
    home: String,
    home_https: bool,
    secret: Option<Secret>,
    /// Origin → the scheme its server asked for.
    asked: HashMap<String, Challenge>,
    warned_plain_http: bool,
}

/// Why the server's 401 stays a 401.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// The credentials were sent (or may not go there) and the server still refuses.
    WrongCredentials,
    /// The server names no scheme this client speaks.
    NoScheme(String),
    /// A server the credentials may not go to asks for them.
    NotHere,
}

fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// The registrable domain ("site") of a host name by the Public Suffix List; none for an IP
/// address or a name that is itself a public suffix (or a single label such as `localhost`).
fn site(url: &Url) -> Option<String> {
    match url.host()? {
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            psl::domain_str(&name).map(str::to_owned)
        }
        _ => None,
    }
}

impl Auth {
    pub(super) fn new(configured: &Url, secret: Option<Secret>) -> Self {
        Self {
            home: origin(configured),
            home_https: configured.scheme() == "https",
            secret,
            asked: HashMap::new(),
            warned_plain_http: false,
        }
    }

    /// Sends this access token from now on (the first, or a fresh one after a refusal).
    pub(super) fn set_bearer(&mut self, token: String) {
        self.secret = Some(Secret::Bearer(token));
    }

    /// Whether `url` may receive the credentials at all: the configured origin, or an https
    /// URL of the same site as an https configured URL.
    pub(super) fn may_receive(&self, url: &Url) -> bool {
        if origin(url) == self.home {
            return true;
        }
        let Ok(home) = Url::parse(&self.home) else {
            return false;
        };
        self.home_https
            && url.scheme() == "https"
            && site(url).is_some_and(|s| Some(s) == site(&home))
    }

    /// The `Authorization` header for a request of `method` to `url`, when it gets one.
    pub(super) fn header(&mut self, method: &str, url: &Url, source: &str) -> Option<String> {
        let secret = self.secret.clone()?;
        if !self.may_receive(url) {
            return None;
        }
        let challenge = match self.asked.get_mut(&origin(url)) {
            Some(challenge) => challenge,
            // Unasked only where nobody can read it on the way: https to the configured origin.
            None if url.scheme() == "https" && origin(url) == self.home => {
                return Some(match &secret {
                    Secret::Password { user, password } => basic(user, password),
                    Secret::Bearer(token) => format!("Bearer {token}"),
                });
            }
            None => return None,
        };
        let header = match (challenge, &secret) {
            (Challenge::Digest(prompt), Secret::Password { user, password }) => {
                let uri = match url.query() {
                    Some(query) => format!("{}?{query}", url.path()),
                    None => url.path().to_owned(),
                };
                let context = digest_auth::AuthContext::new_with_method(
                    user.as_str(),
                    password.as_str(),
                    uri,
                    Option::<&[u8]>::None,
                    digest_auth::HttpMethod::from(method.to_owned()),
                );
                prompt.respond(&context).ok()?.to_header_string()
            }
            (Challenge::Basic, Secret::Password { user, password }) => basic(user, password),
            (Challenge::Bearer, Secret::Bearer(token)) => format!("Bearer {token}"),
            _ => return None,
        };
        if url.scheme() == "http" && !is_loopback(url) && !self.warned_plain_http {
            self.warned_plain_http = true;
            tracing::warn!(
                source,
                "the password goes over plain http: anyone on the way can read it; use an https URL"
            );
        }
        Some(header)
    }

    /// Learns from a 401 to a request that carried `sent` (whether it had credentials):
    /// `Ok` when the request is worth sending again with the scheme the server named.
    pub(super) fn challenged(
        &mut self,
        url: &Url,
        sent: bool,
        challenges: &[String],
    ) -> Result<(), Refused> {
        let Some(secret) = &self.secret else {
            return Err(Refused::WrongCredentials);
        };
        if !self.may_receive(url) {
            return Err(Refused::NotHere);
        }
        let Some(best) = best_challenge(challenges, secret) else {
            let named: Vec<&str> = challenges
                .iter()
                .filter_map(|c| c.split_whitespace().next())
                .collect();
            // A 401 without a challenge (RFC 9110 wants one) can only mean "refused".
            if named.is_empty() {
                return Err(Refused::WrongCredentials);
            }
            return Err(Refused::NoScheme(named.join(", ")));
        };
        // Sent and refused: a second try is worth it only for a Digest nonce gone stale.
        let stale = matches!(&best, Challenge::Digest(prompt) if prompt.stale);
        if sent && !stale {
            return Err(Refused::WrongCredentials);
        }
        self.asked.insert(origin(url), best);
        Ok(())
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The best challenge of a 401's `WWW-Authenticate` values this client can answer: Digest
/// with SHA-256 before Digest with MD5 before Basic (RFC 7616 §3.7: the strongest it knows).
fn best_challenge(values: &[String], secret: &Secret) -> Option<Challenge> {
    let mut best: Option<(u8, Challenge)> = None;
    for value in values {
        let scheme = value.split_whitespace().next().unwrap_or_default();
        let found = match secret {
            Secret::Password { .. } if scheme.eq_ignore_ascii_case("digest") => {
                let Ok(prompt) = digest_auth::parse(value) else {
                    continue;
                };
                // qop=auth-int would need the body hashed: not offered by the servers seen.
                let rank = match prompt.algorithm.algo {
                    digest_auth::AlgorithmType::SHA2_256 => 3,
                    digest_auth::AlgorithmType::MD5 => 2,
                    digest_auth::AlgorithmType::SHA2_512_256 => 3,
                };
                (rank, Challenge::Digest(Box::new(prompt)))
            }
            Secret::Password { .. } if scheme.eq_ignore_ascii_case("basic") => {
                (1, Challenge::Basic)
            }
            Secret::Bearer(_) if scheme.eq_ignore_ascii_case("bearer") => (1, Challenge::Bearer),
            _ => continue,
        };
        if best.as_ref().is_none_or(|(rank, _)| found.0 > *rank) {
            best = Some(found);
        }
    }
    best.map(|(_, challenge)| challenge)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(configured: &str) -> Auth {
        Auth::new(
            &Url::parse(configured).unwrap(),
            Some(Secret::Password {
                user: "Mufasa".into(),
                password: "Circle of Life".into(),
            }),
        )
    }

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[rstest::rstest]
    #[case::same_origin(
        "https://contacts.icloud.com",
        "https://contacts.icloud.com/123/",
        true
    )]
    #[case::same_site_https(
        "https://contacts.icloud.com",
        "https://p42-contacts.icloud.com/123/",
        true
    )]
    #[case::same_site_downgraded(
        "https://contacts.icloud.com",
        "http://p42-contacts.icloud.com/",
        false
    )]
    #[case::other_site("https://contacts.icloud.com", "https://icloud.com.evil.org/", false)]
    #[case::public_suffix_is_no_site("https://a.github.io", "https://b.github.io/", false)]
    #[case::co_uk("https://dav.example.co.uk", "https://www.example.co.uk/", true)]
    #[case::co_uk_other("https://dav.example.co.uk", "https://dav.other.co.uk/", false)]
    #[case::other_port("http://127.0.0.1:5232", "http://127.0.0.1:5233/", false)]
    #[case::ip_to_name("http://127.0.0.1:5232", "http://localhost:5232/", false)]
    #[case::plain_http_same_site("http://dav.example.org", "http://www.example.org/", false)]
    #[case::same_origin_http("http://dav.example.org", "http://dav.example.org/x/", true)]
    fn credentials_go_only_to_their_origin_or_its_site_over_https(
        #[case] configured: &str,
        #[case] target: &str,
        #[case] allowed: bool,
    ) {
        assert_eq!(auth(configured).may_receive(&url(target)), allowed);
    }

    #[test]
    fn unasked_only_over_https_to_the_configured_origin() {
        let mut over_https = auth("https://dav.example.org/");
        let header = over_https.header("PROPFIND", &url("https://dav.example.org/a/"), "s");
        assert!(header.unwrap().starts_with("Basic "));
        // Same site, but another origin: only once that server asked.
        let other = url("https://www.example.org/a/");
        assert_eq!(over_https.header("PROPFIND", &other, "s"), None);
        over_https
            .challenged(&other, false, &["Basic realm=\"x\"".into()])
            .unwrap();
        assert!(over_https.header("PROPFIND", &other, "s").is_some());

        let mut over_http = auth("http://127.0.0.1:5232/");
        let home = url("http://127.0.0.1:5232/alice/");
        assert_eq!(over_http.header("PROPFIND", &home, "s"), None);
        over_http
            .challenged(&home, false, &["Basic realm=\"Radicale\"".into()])
            .unwrap();
        assert!(over_http.header("PROPFIND", &home, "s").is_some());
        // Sent and refused again: the password is wrong, no third try.
        assert_eq!(
            over_http.challenged(&home, true, &["Basic realm=\"Radicale\"".into()]),
            Err(Refused::WrongCredentials)
        );
    }

    #[test]
    fn a_server_that_names_digest_gets_digest_even_beside_basic() {
        let mut auth = auth("http://127.0.0.1:8080/");
        let home = url("http://127.0.0.1:8080/dir/index.html");
        auth.challenged(
            &home,
            false,
            &[
                "Basic realm=\"http-auth@example.org\"".into(),
                r#"Digest realm="http-auth@example.org", qop="auth", algorithm=MD5, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#.into(),
                r#"Digest realm="http-auth@example.org", qop="auth", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#.into(),
            ],
        )
        .unwrap();
        let header = auth.header("GET", &home, "s").unwrap();
        assert!(header.starts_with("Digest "), "{header}");
        assert!(header.contains("algorithm=SHA-256"), "{header}");
        assert!(header.contains(r#"uri="/dir/index.html""#), "{header}");
        assert!(!header.contains("Circle"), "{header}");
    }

    /// RFC 7616 §3.9.1's example, SHA-256: the response the RFC gives for its cnonce.
    #[test]
    fn digest_sha256_matches_rfc_7616() {
        let mut prompt = digest_auth::parse(r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#).unwrap();
        let mut context =
            digest_auth::AuthContext::new("Mufasa", "Circle of Life", "/dir/index.html");
        context.set_custom_cnonce("f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ");
        let header = prompt.respond(&context).unwrap().to_header_string();
        assert!(
            header.contains(
                r#"response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1""#
            ),
            "{header}"
        );
    }

    #[test]
    fn a_server_that_names_no_known_scheme_is_said_so() {
        let mut auth = auth("https://dav.example.org/");
        assert_eq!(
            auth.challenged(
                &url("https://dav.example.org/"),
                true,
                &["Negotiate".into(), "NTLM".into()]
            ),
            Err(Refused::NoScheme("Negotiate, NTLM".into()))
        );
    }
}
