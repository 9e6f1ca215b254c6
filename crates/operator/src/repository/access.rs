//! From a BackupRepository's settings to an open repository: the location parsed, the
//! key and the S3 credentials read from the Secrets the spec names, and errors a user can
//! act on ("Secret shop/repo-key has no key `password` or `key`").
//!
//! The same settings go to data-mover pods as one Secret of environment variables
//! ([`RepositoryAccess::mover_secret_data`]), so that a mover opens the repository exactly
//! as the operator does, with the CLI's own variables.

use std::collections::BTreeMap;
use std::sync::Arc;

use coffer_api::{RepositoryKind, RepositoryRef, RepositorySettings, SecretRef};
use coffer_repo::{
    InitOptions, Location, OpenOptions, OpendalStorage, Repository, S3Options, Secret, Storage,
    StorageOptions,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::{Api, Client};

use crate::error::{Error, KubeContext, Result, is_not_found};

/// The keys of a credentials Secret passed on to the S3 client.
pub const AWS_KEYS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
];

/// Everything needed to open one repository, read from the cluster.
pub struct RepositoryAccess {
    /// The location as the spec wrote it.
    pub location_text: String,
    /// The parsed location.
    pub location: Location,
    /// The unlocking secret.
    pub secret: Secret,
    /// The S3 variables from the credentials Secret.
    pub aws: BTreeMap<String, String>,
    /// Whether the spec asks for the repository to be created when absent.
    pub initialize: bool,
    /// Whether the repository is only read (no backups into it).
    pub read_only: bool,
    /// Init options from the spec (encryption, compression).
    pub init: InitOptions,
}

/// The settings of the repository `r` references from namespace `namespace`, and the
/// namespace its Secrets are in unless a reference names its own: the repository's for a
/// BackupRepository, `cluster_secret_namespace` (the operator's) for a
/// ClusterBackupRepository.
pub async fn settings_of(
    client: &Client,
    r: &RepositoryRef,
    namespace: &str,
    cluster_secret_namespace: &str,
) -> Result<(RepositorySettings, String)> {
    match r.kind {
        RepositoryKind::BackupRepository => {
            let api: Api<coffer_api::BackupRepository> = Api::namespaced(client.clone(), namespace);
            match api
                .get_opt(&r.name)
                .await
                .kube_ctx(|| format!("reading BackupRepository {namespace}/{}", r.name))?
            {
                Some(o) => Ok((o.spec.settings, namespace.to_string())),
                None => Err(Error::Invalid(format!(
                    "BackupRepository {namespace}/{} does not exist: create it, or name another repository in spec.repository",
                    r.name
                ))),
            }
        }
        RepositoryKind::ClusterBackupRepository => {
            let api: Api<coffer_api::ClusterBackupRepository> = Api::all(client.clone());
            match api
                .get_opt(&r.name)
                .await
                .kube_ctx(|| format!("reading ClusterBackupRepository {}", r.name))?
            {
                Some(o) => Ok((o.spec.settings, cluster_secret_namespace.to_string())),
                None => Err(Error::Invalid(format!(
                    "ClusterBackupRepository {} does not exist: create it, or name another repository in spec.repository",
                    r.name
                ))),
            }
        }
    }
}

/// Reads Secret `r` (in `r.namespace`, else `default_ns`) and returns its data.
async fn read_secret(
    client: &Client,
    r: &SecretRef,
    default_ns: &str,
    purpose: &str,
) -> Result<BTreeMap<String, ByteString>> {
    let ns = r.namespace.as_deref().unwrap_or(default_ns);
    let api: Api<KubeSecret> = Api::namespaced(client.clone(), ns);
    match api.get(&r.name).await {
        Ok(s) => Ok(s.data.unwrap_or_default()),
        Err(e) if is_not_found(&e) => Err(Error::Secret(format!(
            "the {purpose} Secret {ns}/{} does not exist: create it (kubectl create secret generic {} -n {ns} --from-literal=password=...)",
            r.name, r.name
        ))),
        Err(e) => Err(e).kube_ctx(|| format!("reading Secret {ns}/{}", r.name)),
    }
}

impl RepositoryAccess {
    /// Reads the Secrets `settings` names (in `secret_ns` unless a reference names its
    /// own namespace) and parses the location.
    pub async fn resolve(
        client: &Client,
        settings: &RepositorySettings,
        secret_ns: &str,
    ) -> Result<RepositoryAccess> {
        let location = Location::parse(&settings.location).map_err(|e| {
            Error::Invalid(format!(
                "spec.location {:?} is not a repository location ({e}): use an absolute path or s3://BUCKET/PREFIX",
                settings.location
            ))
        })?;
        let key = read_secret(client, &settings.key_secret, secret_ns, "key").await?;
        let key_ns = settings
            .key_secret
            .namespace
            .as_deref()
            .unwrap_or(secret_ns);
        let secret = if let Some(p) = key.get("password") {
            let text = String::from_utf8(p.0.clone()).map_err(|_| {
                Error::Secret(format!(
                    "key `password` of Secret {key_ns}/{} is not UTF-8 text: store a raw key under `key` instead",
                    settings.key_secret.name
                ))
            })?;
            let text = text.trim_end_matches(['\n', '\r']).to_string();
            if text.is_empty() {
                return Err(Error::Secret(format!(
                    "key `password` of Secret {key_ns}/{} is empty",
                    settings.key_secret.name
                )));
            }
            Secret::Password(text)
        } else if let Some(k) = key.get("key") {
            Secret::KeyFile(k.0.clone())
        } else {
            return Err(Error::Secret(format!(
                "Secret {key_ns}/{} has no key `password` or `key`: add one (the repository's password, or a raw key of at least 32 bytes)",
                settings.key_secret.name
            )));
        };
        let mut aws = BTreeMap::new();
        if let Some(c) = &settings.credentials_secret {
            let data = read_secret(client, c, secret_ns, "credentials").await?;
            for k in AWS_KEYS {
                if let Some(v) = data.get(*k) {
                    let v = String::from_utf8(v.0.clone()).map_err(|_| {
                        Error::Secret(format!(
                            "key {k} of credentials Secret {} is not UTF-8 text",
                            c.name
                        ))
                    })?;
                    aws.insert(k.to_string(), v.trim().to_string());
                }
            }
        }
        let mut init = InitOptions::default();
        if let Some(e) = &settings.encryption {
            init.encryption = e.parse().map_err(|_| {
                Error::Invalid(format!(
                    "spec.encryption {e:?} is not known: use aes256gcm or chacha20poly1305"
                ))
            })?;
        }
        if let Some(c) = &settings.compression {
            init.compression = c.parse().map_err(|_| {
                Error::Invalid(format!(
                    "spec.compression {c:?} is not known: use zstd, zstd:LEVEL or none"
                ))
            })?;
        }
        Ok(RepositoryAccess {
            location_text: settings.location.clone(),
            location,
            secret,
            aws,
            initialize: settings.initialize,
            read_only: settings.read_only,
            init,
        })
    }

    /// The storage, with the credentials Secret's variables (and, when it gives none,
    /// the ambient credentials of the pod: web identity, instance metadata).
    pub fn storage(&self) -> Result<Arc<dyn Storage>> {
        let options = StorageOptions {
            s3: S3Options::from_aws_variables(|k| self.aws.get(k).cloned()),
        };
        Ok(Arc::new(OpendalStorage::new(&self.location, &options)?))
    }

    /// Opens the repository; creates it first when it does not exist and the spec says
    /// `initialize: true`. Returns whether it was created.
    pub async fn open_or_init(&self, client: &OpenOptions) -> Result<(Repository, bool)> {
        let storage = self.storage()?;
        match Repository::open(storage.clone(), &self.secret, client).await {
            Ok(r) => Ok((r, false)),
            Err(coffer_repo::Error::NotARepository(_)) if self.initialize && !self.read_only => {
                let r = Repository::init(storage, &self.secret, self.init.clone(), client).await?;
                Ok((r, true))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Opens the repository (never creates it).
    pub async fn open(&self, client: &OpenOptions) -> Result<Repository> {
        Ok(Repository::open(self.storage()?, &self.secret, client).await?)
    }

    /// The data of the Secret a data-mover pod gets: `COFFER_REPO`, the password as
    /// `COFFER_PASSWORD` or the raw key as `key` (a file the mover reads), and the S3
    /// variables.
    pub fn mover_secret_data(&self) -> BTreeMap<String, ByteString> {
        let mut data = BTreeMap::new();
        data.insert(
            "COFFER_REPO".to_string(),
            ByteString(self.location_text.clone().into_bytes()),
        );
        match &self.secret {
            Secret::Password(p) => {
                data.insert("COFFER_PASSWORD".into(), ByteString(p.clone().into_bytes()));
            }
            Secret::KeyFile(k) => {
                data.insert("key".into(), ByteString(k.clone()));
            }
        }
        for (k, v) in &self.aws {
            data.insert(k.clone(), ByteString(v.clone().into_bytes()));
        }
        data
    }

    /// Whether movers unlock with a raw key (a file) rather than a password.
    pub fn uses_key_file(&self) -> bool {
        matches!(self.secret, Secret::KeyFile(_))
    }
}

/// What a user should read when opening failed: one line naming the cause and the fix.
pub fn unavailable_message(e: &Error) -> String {
    match e {
        Error::Repo(coffer_repo::Error::WrongSecret { .. }) => format!(
            "wrong password or key: no key slot of the repository opens with the key Secret ({e})"
        ),
        Error::Repo(coffer_repo::Error::NotARepository(l)) => format!(
            "{l} is not a Coffer repository: set spec.initialize: true to create one there, or fix spec.location"
        ),
        Error::Repo(coffer_repo::Error::Unreachable { .. }) => {
            format!("the repository's storage is unreachable: {e}")
        }
        other => other.to_string(),
    }
}
