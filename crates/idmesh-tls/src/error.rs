//! What can go wrong building, loading or checking certificates.

/// A PKI failure; the message names the file or field and the rule.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Text that should hold PEM objects does not, or holds the wrong kind.
    #[error("{what}: {detail}")]
    Pem {
        /// What was being read (a file path or a field).
        what: String,
        /// Why it was refused.
        detail: String,
    },
    /// A certificate does not fit the rule it is used under.
    #[error("{what}: {detail}")]
    Certificate {
        /// Which certificate.
        what: String,
        /// The rule it breaks.
        detail: String,
    },
    /// Generating a key or a certificate failed.
    #[error("cannot generate {what}: {detail}")]
    Generate {
        /// What was being generated.
        what: String,
        /// The library's reason.
        detail: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl TlsError {
    pub(crate) fn pem(what: &str, detail: impl Into<String>) -> Self {
        Self::Pem { what: what.to_owned(), detail: detail.into() }
    }

    pub(crate) fn cert(what: &str, detail: impl Into<String>) -> Self {
        Self::Certificate { what: what.to_owned(), detail: detail.into() }
    }

    pub(crate) fn generate(what: &str, detail: impl std::fmt::Display) -> Self {
        Self::Generate { what: what.to_owned(), detail: detail.to_string() }
    }
}
