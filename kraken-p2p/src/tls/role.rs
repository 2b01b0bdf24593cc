//! Roles: the part a client certificate's holder plays in the cluster, read from the
//! certificate, and the sets of roles each endpoint admits.
//!
//! A certificate names its role with one subject-alternative-name URI `kraken:role:<role>`
//! (`kraken:role:agent`, `kraken:role:build-index`, …), signed by the cluster's CA like the
//! rest of the certificate:
//!
//! ```text
//! openssl req -new -key agent.key -subj /CN=agent-17 \
//!     -addext subjectAltName=URI:kraken:role:agent | openssl x509 -req -CA ca.pem …
//! ```
//!
//! A certificate without such a URI is from before roles: it counts as
//! [`Role::Operator`] (what every certificate could do before), unless the listener sets
//! [`require_roles`](super::ServerTlsConfig::require_roles). A certificate naming a role this
//! build does not know, or two different roles, has no role: it may make only the requests
//! anyone may make.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The part a credential's holder plays. See `docs/tls.md` for what each may call.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A host's agent: pulls, announces, seeds.
    Agent,
    /// An origin: stores blobs, replicates them to its peers, publishes metainfo.
    Origin,
    /// A proxy: uploads pushed blobs to origins and writes tags.
    Proxy,
    /// A build-index: replicates tags (and their blobs) to other clusters.
    BuildIndex,
    /// A person or tool running the cluster: may call every endpoint.
    Operator,
}

impl Role {
    /// Every role.
    pub const ALL: [Self; 5] = [
        Self::Agent,
        Self::Origin,
        Self::Proxy,
        Self::BuildIndex,
        Self::Operator,
    ];

    /// The name in certificates and configs: `agent`, `origin`, `proxy`, `build-index`,
    /// `operator`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Origin => "origin",
            Self::Proxy => "proxy",
            Self::BuildIndex => "build-index",
            Self::Operator => "operator",
        }
    }

    /// The subject-alternative-name URI naming this role: `kraken:role:<name>`.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.as_str())
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or(UnknownRole)
    }
}

/// A name that is not a [`Role`].
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("not a role (agent, origin, proxy, build-index, operator)")]
pub struct UnknownRole;

/// The roles an endpoint admits; [`Roles::ANYONE`] for endpoints open to every client.
#[derive(Clone, Copy, Eq, PartialEq)]
pub struct Roles {
    bits: u8,
    anyone: bool,
}

impl Roles {
    /// Every client, with or without a certificate or role: reads, probes.
    pub const ANYONE: Self = Self {
        bits: 0,
        anyone: true,
    };

    /// Operators only: cleanup, eviction, anything not meant for a service.
    pub const OPERATORS: Self = Self::of(&[]);

    /// Exactly `roles` (and operators, who may call everything).
    pub const fn of(roles: &[Role]) -> Self {
        let mut bits = Role::Operator.bit();
        let mut i = 0;
        while i < roles.len() {
            bits |= roles[i].bit();
            i += 1;
        }
        Self {
            bits,
            anyone: false,
        }
    }

    /// Whether every client is admitted.
    pub const fn is_anyone(self) -> bool {
        self.anyone
    }

    /// Whether `role` is admitted.
    pub const fn contains(self, role: Role) -> bool {
        self.anyone || self.bits & role.bit() != 0
    }
}

impl fmt::Debug for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.anyone {
            return f.write_str("anyone");
        }
        let names: Vec<&str> = Role::ALL
            .into_iter()
            .filter(|role| self.contains(*role))
            .map(Role::as_str)
            .collect();
        f.write_str(&names.join(", "))
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

const ROLE_URI_PREFIX: &str = "kraken:role:";

/// What a verified certificate says about its role.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum NamedRole {
    /// No `kraken:role:` URI: a certificate from before roles.
    Unnamed,
    /// Exactly one role.
    Named(Role),
    /// A role this build does not know, two different roles, or a certificate that does not
    /// parse: no role.
    Unusable,
}

impl NamedRole {
    /// The role the holder of a certificate saying `self` acts in.
    pub(crate) fn effective(self, require_roles: bool) -> Option<Role> {
        match self {
            Self::Named(role) => Some(role),
            Self::Unnamed if !require_roles => Some(Role::Operator),
            Self::Unnamed | Self::Unusable => None,
        }
    }
}

/// The role `der` (an X.509 certificate the handshake verified) names in its
/// subject-alternative-name URIs.
pub(crate) fn named_role(der: &[u8]) -> NamedRole {
    let Some(uris) = san_uris(der) else {
        return NamedRole::Unusable;
    };
    let mut found = NamedRole::Unnamed;
    for uri in uris {
        let Some(name) = uri.strip_prefix(ROLE_URI_PREFIX.as_bytes()) else {
            continue;
        };
        let role = std::str::from_utf8(name)
            .ok()
            .and_then(|name| name.parse::<Role>().ok());
        found = match (found, role) {
            (_, None) => return NamedRole::Unusable,
            (NamedRole::Unnamed, Some(role)) => NamedRole::Named(role),
            (NamedRole::Named(seen), Some(role)) if seen == role => found,
            _ => return NamedRole::Unusable,
        };
    }
    found
}

// A minimal DER walk to the subject-alternative-name extension: rustls has verified the
// certificate already, so this only reads; anything unexpected counts as "no URIs".

const SEQUENCE: u8 = 0x30;
const EXTENSIONS: u8 = 0xa3;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const URI: u8 = 0x86;
/// 2.5.29.17, subjectAltName.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// The URIs in the certificate's subject alternative names; `None` if it does not parse.
fn san_uris(der: &[u8]) -> Option<Vec<&[u8]>> {
    let (certificate, _) = expect(der, SEQUENCE)?;
    let (mut tbs, _) = expect(certificate, SEQUENCE)?;
    while !tbs.is_empty() {
        let (tag, content, rest) = tlv(tbs)?;
        tbs = rest;
        if tag != EXTENSIONS {
            continue;
        }
        let (mut extensions, _) = expect(content, SEQUENCE)?;
        while !extensions.is_empty() {
            let (extension, rest) = expect(extensions, SEQUENCE)?;
            extensions = rest;
            let (oid, mut fields) = expect(extension, OID)?;
            if oid != SUBJECT_ALT_NAME {
                continue;
            }
            // An optional `critical` BOOLEAN, then the value.
            loop {
                let (tag, value, rest) = tlv(fields)?;
                fields = rest;
                if tag == OCTET_STRING {
                    let (mut names, _) = expect(value, SEQUENCE)?;
                    let mut uris = Vec::new();
                    while !names.is_empty() {
                        let (tag, name, rest) = tlv(names)?;
                        names = rest;
                        if tag == URI {
                            uris.push(name);
                        }
                    }
                    return Some(uris);
                }
            }
        }
    }
    Some(Vec::new())
}

/// The content of the element at the start of `input` if its tag is `tag`, and what follows.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, content, rest) = tlv(input)?;
    (found == tag).then_some((content, rest))
}

/// The tag, content and rest of the DER element at the start of `input`.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || input.len() < count {
            return None;
        }
        let (bytes, rest) = input.split_at(count);
        input = rest;
        bytes
            .iter()
            .fold(0usize, |length, &b| (length << 8) | usize::from(b))
    };
    if input.len() < length {
        return None;
    }
    let (content, rest) = input.split_at(length);
    Some((tag, content, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip_and_sets_always_admit_operators() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
            assert_eq!(role.uri(), format!("kraken:role:{role}"));
        }
        assert!("root".parse::<Role>().is_err());
        let writers = Roles::of(&[Role::Proxy]);
        assert!(writers.contains(Role::Proxy) && writers.contains(Role::Operator));
        assert!(!writers.contains(Role::Agent));
        assert_eq!(writers.to_string(), "proxy, operator");
        assert!(Roles::ANYONE.contains(Role::Agent) && Roles::ANYONE.is_anyone());
    }

    #[test]
    fn certificates_without_roles_are_operators_unless_roles_are_required() {
        assert_eq!(NamedRole::Unnamed.effective(false), Some(Role::Operator));
        assert_eq!(NamedRole::Unnamed.effective(true), None);
        assert_eq!(NamedRole::Unusable.effective(false), None);
        assert_eq!(
            NamedRole::Named(Role::Agent).effective(true),
            Some(Role::Agent)
        );
        assert_eq!(named_role(b"not DER"), NamedRole::Unusable);
        assert_eq!(tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
    }
}
