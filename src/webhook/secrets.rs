//! Which secrets may sign a delivery for which repository.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use secrecy::{ExposeSecret, SecretSlice};

/// Secret bytes: `Debug` shows them redacted, and they are zeroed on drop.
pub type SecretBytes = SecretSlice<u8>;

/// Secret bytes from a file or a Secret's value: trailing newlines (from `echo secret > file`)
/// are not part of the secret.
pub fn secret_bytes(bytes: impl Into<Vec<u8>>) -> SecretBytes {
    let mut bytes = bytes.into();
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    SecretBytes::from(bytes)
}

/// Per-repository webhook secrets (any runner of the repository may name one), per-organisation
/// ones (an organisation runner's, covering every repository of its owner) and an optional
/// organisation-wide secret that covers every repository of the organisations served: the
/// owners of the runners, and no one else's.
#[derive(Debug, Clone, Default)]
pub struct WebhookSecrets {
    by_repo: HashMap<String, Vec<SecretBytes>>,
    by_owner: HashMap<String, Vec<SecretBytes>>,
    organisation: Option<SecretBytes>,
    owners: HashSet<String>,
}

impl WebhookSecrets {
    pub fn new(organisation: Option<SecretBytes>) -> Self {
        Self { organisation: organisation.filter(|s| !s.expose_secret().is_empty()), ..Self::default() }
    }

    /// Lets the organisation-wide secret sign for the repositories of `owner` (any case).
    pub fn serve_owner(&mut self, owner: &str) {
        if !self.owners.contains(owner) {
            self.owners.insert(owner.to_ascii_lowercase());
        }
    }

    /// Adds a secret for `repo` (`owner/name`, any case).
    pub fn add(&mut self, repo: &str, secret: SecretBytes) {
        Self::add_to(&mut self.by_repo, repo, secret);
    }

    /// Adds a secret that signs for every repository of `owner` (any case): an organisation
    /// runner's, as the organisation's (or its GitHub App's) webhook is signed.
    pub fn add_owner(&mut self, owner: &str, secret: SecretBytes) {
        Self::add_to(&mut self.by_owner, owner, secret);
    }

    fn add_to(map: &mut HashMap<String, Vec<SecretBytes>>, key: &str, secret: SecretBytes) {
        if secret.expose_secret().is_empty() {
            return;
        }
        let secrets = map.entry(key.to_ascii_lowercase()).or_default();
        if !secrets.iter().any(|known| known.expose_secret() == secret.expose_secret()) {
            secrets.push(secret);
        }
    }

    /// The secrets that may sign a delivery naming `repo` (lower-cased): its own, its owner's
    /// (organisation runners'), and the organisation-wide one when its owner is served (or the
    /// payload names no repository, so it can change no job).
    pub fn for_repo<'a>(&'a self, repo: Option<&str>) -> impl Iterator<Item = &'a [u8]> + 'a {
        let owner = repo.and_then(|r| r.split_once('/')).map(|(owner, _)| owner);
        let repo_secrets = repo.and_then(|r| self.by_repo.get(r)).into_iter().flatten();
        let owner_secrets = owner.and_then(|o| self.by_owner.get(o)).into_iter().flatten();
        let owner_served = repo.is_none() || owner.is_some_and(|owner| self.owners.contains(owner));
        let organisation = self.organisation.iter().filter(move |_| owner_served);
        repo_secrets.chain(owner_secrets).chain(organisation).map(|secret| secret.expose_secret())
    }

    pub fn has_organisation_secret(&self) -> bool {
        self.organisation.is_some()
    }

    pub fn repositories(&self) -> usize {
        self.by_repo.len()
    }

    /// Organisations whose runners hold a secret of their own.
    pub fn organisations(&self) -> usize {
        self.by_owner.len()
    }
}

/// The secrets in force, shared by the webhook handler and whoever follows the catalog: swapped
/// whole when the runners' Secrets change, so a request clones one `Arc` and sees one version.
#[derive(Debug, Clone, Default)]
pub struct LiveSecrets(Arc<RwLock<Arc<WebhookSecrets>>>);

impl LiveSecrets {
    pub fn new(secrets: WebhookSecrets) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(secrets))))
    }

    /// The webhook secrets of every repository, as of now.
    pub fn current(&self) -> Arc<WebhookSecrets> {
        // A panic elsewhere while holding the lock cannot leave a half-written Arc behind.
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn replace(&self, secrets: WebhookSecrets) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(secrets);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_secret() {
        let mut secrets = WebhookSecrets::new(Some(secret_bytes("org-secret")));
        secrets.add("acme/api", secret_bytes("repo-secret\n"));
        let shown = format!("{secrets:?}");
        assert!(!shown.contains("org-secret") && !shown.contains("repo-secret"), "{shown}");
    }

    #[test]
    fn a_repository_is_signed_by_its_own_secrets_or_the_organisations() {
        let mut secrets = WebhookSecrets::new(Some(secret_bytes("org")));
        secrets.add("Acme/API", secret_bytes("a"));
        secrets.add("acme/web", secret_bytes("b"));
        secrets.serve_owner("Acme");
        let for_api: Vec<&[u8]> = secrets.for_repo(Some("acme/api")).collect();
        assert_eq!(for_api, vec![b"a".as_slice(), b"org".as_slice()]);
        let for_unknown: Vec<&[u8]> = secrets.for_repo(Some("acme/other")).collect();
        assert_eq!(for_unknown, vec![b"org".as_slice()]);
        assert_eq!(secrets.for_repo(Some("evil/other")).count(), 0, "only the served organisations' repositories");
        assert_eq!(secrets.for_repo(Some("noslash")).count(), 0);
    }

    #[test]
    fn an_organisation_runners_secret_signs_for_its_owners_repositories_and_a_repositorys_for_its_own() {
        let mut secrets = WebhookSecrets::new(None);
        secrets.add("acme/a", secret_bytes("secret-of-a"));
        secrets.add_owner("Acme", secret_bytes("secret-of-acme"));
        secrets.serve_owner("acme");
        let for_b: Vec<&[u8]> = secrets.for_repo(Some("acme/b")).collect();
        assert_eq!(for_b, vec![b"secret-of-acme".as_slice()], "repository a's secret never signs for b");
        let for_a: Vec<&[u8]> = secrets.for_repo(Some("acme/a")).collect();
        assert_eq!(for_a, vec![b"secret-of-a".as_slice(), b"secret-of-acme".as_slice()]);
        assert_eq!(secrets.for_repo(Some("other/b")).count(), 0, "another owner's repositories");
        assert_eq!(secrets.for_repo(None).count(), 0);
        assert_eq!(secrets.organisations(), 1);
        assert!(!format!("{secrets:?}").contains("secret-of"));
    }

    #[test]
    fn trailing_newlines_from_secret_files_are_trimmed() {
        assert_eq!(secret_bytes("s3cret\r\n").expose_secret(), b"s3cret");
    }
}
