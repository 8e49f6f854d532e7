//! Who a sender is, judged by what it cannot forge: its access token.
//!
//! Every sender holds its own Meta token, so a keyed hash of the token (its
//! *fingerprint*) names the sender without revealing the token: HMAC-SHA256
//! under `SENDGATE_FINGERPRINT_KEY` (or a fixed key when that is unset),
//! shown as its first 16 hex digits. Config ties fingerprints to clients
//! (`[clients.<name>] tokens = ["<fingerprint>"]`), and a token's client
//! share is counted per token whatever header it sends.
//!
//! The `x-sendgate-client` header is a label, not an identity. It may pick
//! one of the clients the token is tied to, and it may name a client that
//! lists no tokens, whose only policy is to make sends stricter
//! (`campaign = true`). It can never give a token another token's share or
//! a share of its own: a client with a share of its own must list its
//! tokens (config validation says so).

use std::borrow::Cow;

use http::{HeaderMap, header};

use siphasher::sip::SipHasher13;

use crate::config::Config;
use crate::fingerprint::Fingerprint;
use crate::query::query_pairs;
use crate::tls::PeerNames;

/// The access token a request carries: the credentials of
/// `Authorization: Bearer <token>` (or Graph's older `OAuth <token>`),
/// else an `access_token` query parameter.
pub(crate) fn token<'a>(headers: &'a HeaderMap, query: Option<&str>) -> Option<Cow<'a, str>> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        return token_in(value.to_str().ok()?).map(Cow::Borrowed);
    }
    let query = query.filter(|q| q.contains("access_token"))?;
    let (_, value) = query_pairs(query).find(|(name, _)| name == "access_token")?;
    let token = value.trim();
    (!token.is_empty()).then(|| Cow::Owned(token.to_owned()))
}

/// The token in an `Authorization` value: after a `Bearer` or `OAuth`
/// scheme, else the whole value. Surrounding space is not part of it, so
/// spacing cannot make one token look like two.
pub(crate) fn token_in(value: &str) -> Option<&str> {
    let text = value.trim();
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    let credentials =
        match scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth") {
            true => rest.trim(),
            false => text,
        };
    (!credentials.is_empty()).then_some(credentials)
}

/// Who sent a request, as the policies and the client limit see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Sender<'a> {
    /// The fingerprint of its token; `None` for a request without one.
    pub(crate) fingerprint: Option<Fingerprint>,
    /// The configured client the token is tied to: its share and policy apply.
    pub(crate) tied: Option<&'a str>,
    /// A configured client without tokens that the header named: only its
    /// `campaign` applies.
    pub(crate) label: Option<&'a str>,
    /// The configured client its TLS client certificate names: it is
    /// that client whatever token it sends, and the client's share is
    /// counted once across its connections and tokens.
    pub(crate) certified: Option<&'a str>,
}

impl<'a> Sender<'a> {
    /// Identifies a sender from its token's fingerprint, the client it
    /// declares in `x-sendgate-client`, and the names of the client
    /// certificate its connection presented (verified in the handshake).
    pub(crate) fn identify(
        config: &'a Config,
        fingerprint: Option<Fingerprint>,
        declared: Option<&str>,
        certificate: Option<&PeerNames>,
    ) -> Self {
        let certified = certificate.and_then(|names| {
            names
                .iter()
                .find_map(|name| config.clients.get_key_value(name))
                .map(|(name, _)| name.as_str())
        });
        let declared = declared.and_then(|name| config.clients.get_key_value(name));
        let holds = |tokens: &[Fingerprint]| fingerprint.is_some_and(|fp| tokens.contains(&fp));
        let tied = certified.or_else(|| match declared {
            // The header may choose among the clients this token is tied to.
            Some((name, client)) if holds(&client.tokens) => Some(name.as_str()),
            _ => config
                .clients
                .iter()
                .find(|(_, client)| holds(&client.tokens))
                .map(|(name, _)| name.as_str()),
        });
        let label = declared
            .filter(|(_, client)| client.tokens.is_empty())
            .map(|(name, _)| name.as_str());
        Sender {
            fingerprint,
            tied,
            label,
            certified,
        }
    }

    /// True when a client this sender is, or labels itself as, is a campaign tool.
    pub(crate) fn is_campaign(&self, config: &Config) -> bool {
        [self.tied, self.label]
            .into_iter()
            .flatten()
            .any(|name| config.is_campaign_client(name))
    }

    /// The key of its client-limit bucket: one per certified client, else
    /// one per token (tokenless requests share one).
    pub(crate) fn bucket(&self) -> u64 {
        match self.certified {
            // A hash with fixed keys, so that every replica of a fleet
            // counts a client in the same bucket.
            Some(name) => SipHasher13::new().hash(name.as_bytes()),
            None => self.fingerprint.map_or(0, Fingerprint::as_u64),
        }
    }

    /// The name logs show: the client it is, else its fingerprint.
    pub(crate) fn name(&self) -> Cow<'a, str> {
        match (self.tied.or(self.label), self.fingerprint) {
            (Some(name), _) => Cow::Borrowed(name),
            (None, Some(fingerprint)) => Cow::Owned(format!("token:{fingerprint}")),
            (None, None) => Cow::Borrowed("anonymous"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::Fingerprinter;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, authorization.parse().unwrap());
        headers
    }

    #[test]
    fn fingerprints_are_stable_keyed_and_never_the_token() {
        let default = Fingerprinter::new(None);
        let a = default.of("EAAB-token-a");
        assert_eq!(a, default.of("EAAB-token-a"));
        assert_ne!(a, default.of("EAAB-token-b"));
        assert_ne!(a, Fingerprinter::new(Some("secret")).of("EAAB-token-a"));
        let shown = a.to_string();
        assert_eq!(shown.len(), 16);
        assert_eq!(shown.parse::<Fingerprint>(), Ok(a));
        assert!(!shown.contains("token"));
        assert!("xyz".parse::<Fingerprint>().is_err());
        assert!("0123456789abcdeg".parse::<Fingerprint>().is_err());
    }

    #[test]
    fn the_token_is_read_from_the_header_in_any_spelling_or_the_query() {
        for value in [
            "Bearer abc",
            "bearer abc",
            "OAuth abc",
            "Bearer   abc  ",
            "abc",
        ] {
            assert_eq!(
                token(&headers(value), None).as_deref(),
                Some("abc"),
                "{value}"
            );
        }
        let none = HeaderMap::new();
        assert_eq!(
            token(&none, Some("x=1&access_token=abc")).as_deref(),
            Some("abc")
        );
        assert_eq!(token(&none, Some("x=1")), None);
        assert_eq!(token(&headers("Bearer "), None), None);
    }

    #[test]
    fn a_header_cannot_claim_another_tokens_client() {
        let fingerprinter = Fingerprinter::new(None);
        let mine = fingerprinter.of("mine");
        let theirs = fingerprinter.of("theirs");
        let text = format!(
            "[clients.big]\ntokens = [\"{theirs}\"]\nper_second = 1000\n\
             [clients.crm]\ntokens = [\"{mine}\"]\n\
             [clients.crm_bulk]\ntokens = [\"{mine}\"]\ncampaign = true\n\
             [clients.blaster]\ncampaign = true\n"
        );
        let config = Config::from_sources(&text, std::iter::empty()).unwrap();
        let me = |declared| Sender::identify(&config, Some(mine), declared, None);
        assert_eq!(me(None).tied, Some("crm"));
        assert_eq!(me(Some("big")).tied, Some("crm"), "not tied to big");
        assert_eq!(me(Some("crm_bulk")).tied, Some("crm_bulk"), "tied to both");
        assert!(me(Some("crm_bulk")).is_campaign(&config));
        let labelled = me(Some("blaster"));
        assert_eq!(
            (labelled.tied, labelled.label),
            (Some("crm"), Some("blaster"))
        );
        assert!(labelled.is_campaign(&config), "a stricter label applies");
        assert_eq!(me(Some("nobody")).bucket(), me(None).bucket());
        assert_eq!(me(Some("big")).bucket(), me(None).bucket());
        let stranger = Sender::identify(&config, Some(fingerprinter.of("x")), Some("big"), None);
        assert_eq!((stranger.tied, stranger.label), (None, None));
        assert!(stranger.name().starts_with("token:"));
    }

    #[test]
    fn a_client_certificate_names_its_client_whatever_the_token_or_header() {
        let fingerprinter = Fingerprinter::new(None);
        let crm_token = fingerprinter.of("crm");
        // Only serving reads the files.
        let text = format!(
            "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_ca = \"ca.pem\"\n\
             [clients.crm]\ntokens = [\"{crm_token}\"]\n\
             [clients.\"bulk.example\"]\nper_second = 5\ncampaign = true\n"
        );
        let config = Config::from_sources(&text, std::iter::empty()).unwrap();
        let bulk = PeerNames::from_names(&["other.example", "bulk.example"]);
        // The certificate wins over the token's client and the header.
        for (token, declared) in [("crm", Some("crm")), ("a", None), ("b", Some("x"))] {
            let sender = Sender::identify(
                &config,
                Some(fingerprinter.of(token)),
                declared,
                Some(&bulk),
            );
            assert_eq!(sender.tied, Some("bulk.example"), "{token} {declared:?}");
            assert!(sender.is_campaign(&config));
            assert_eq!(sender.name(), "bulk.example");
        }
        // One bucket for the client, whichever token it sends.
        let bucket = |token| {
            Sender::identify(&config, Some(fingerprinter.of(token)), None, Some(&bulk)).bucket()
        };
        assert_eq!(bucket("a"), bucket("b"));
        assert_ne!(
            bucket("a"),
            Sender::identify(&config, Some(fingerprinter.of("a")), None, None).bucket()
        );
        // A certificate naming no configured client changes nothing.
        let stranger = PeerNames::from_names(&["stranger.example"]);
        let sender = Sender::identify(&config, Some(crm_token), None, Some(&stranger));
        assert_eq!((sender.tied, sender.certified), (Some("crm"), None));
    }
}
