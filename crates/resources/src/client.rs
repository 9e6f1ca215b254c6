//! Connecting to a cluster: a kube-rs client built from the kubeconfig the caller names,
//! checked to answer before any work starts, and one-line errors for whatever goes wrong
//! on the way (an unreadable kubeconfig, an unknown context, an API server that does not
//! answer).
//!
//! The caller decides where the configuration comes from ([`KubeconfigSource`]): the CLI
//! resolves `--kubeconfig`, `KUBECONFIG` and `~/.kube/config` itself and passes the
//! files; a controller running in the cluster asks for its service account, or builds its
//! own [`kube::Client`] and wraps it with [`Cluster::from_client`]. Nothing here reads the
//! process environment, except kube-rs's in-cluster and inferred configurations when the
//! caller asks for them.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Namespace;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::archive::ClusterInfo;
use crate::{Error, Result};

/// Where the connection settings come from.
#[derive(Clone, Debug)]
pub enum KubeconfigSource {
    /// These kubeconfig files, merged in order as `KUBECONFIG` lists them (the first file
    /// that sets a value wins).
    Files(Vec<PathBuf>),
    /// The pod's service account and the `KUBERNETES_SERVICE_*` variables (kube-rs's
    /// in-cluster configuration).
    InCluster,
    /// kube-rs's own inference (`KUBECONFIG`, `~/.kube/config`, then in-cluster); it reads
    /// the process environment.
    Infer,
}

/// How to reach a cluster.
#[derive(Clone, Debug)]
pub struct ClusterAccess {
    /// Where the settings come from.
    pub source: KubeconfigSource,
    /// The kubeconfig context to use (default: the current context). Only with
    /// [`KubeconfigSource::Files`].
    pub context: Option<String>,
}

/// A connected cluster: the client, the API server's address (for messages and
/// provenance) and the context's default namespace.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    server: String,
    default_namespace: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("server", &self.server)
            .field("default_namespace", &self.default_namespace)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Builds a client from `access` and checks that the API server answers. Every
    /// failure is one line: which kubeconfig or context is wrong, or which server could
    /// not be reached and why.
    pub async fn connect(access: &ClusterAccess) -> Result<Cluster> {
        let config = config_for(access).await?;
        let cluster = Cluster::from_config(config)?;
        cluster.probe().await?;
        Ok(cluster)
    }

    /// A cluster from a kube-rs configuration the caller built; not probed.
    pub fn from_config(config: Config) -> Result<Cluster> {
        let server = config.cluster_url.to_string();
        let default_namespace = config.default_namespace.clone();
        let client = Client::try_from(config).map_err(|e| Error::Kubeconfig {
            path: server.clone(),
            cause: crate::one_line_cause(&e),
        })?;
        Ok(Cluster {
            client,
            server,
            default_namespace,
        })
    }

    /// Wraps a client the caller already has (a controller's). `server` names the API
    /// server in messages and provenance annotations.
    pub fn from_client(
        client: Client,
        server: impl Into<String>,
        default_namespace: &str,
    ) -> Cluster {
        Cluster {
            client,
            server: server.into(),
            default_namespace: default_namespace.to_string(),
        }
    }

    /// The kube-rs client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The default namespace of the kubeconfig context (or the pod's namespace).
    pub fn default_namespace(&self) -> &str {
        &self.default_namespace
    }

    /// Checks that the API server answers; an error names the server and the cause.
    pub async fn probe(&self) -> Result<()> {
        self.client
            .apiserver_version()
            .await
            .map(|_| ())
            .map_err(|e| self.unreachable(&e))
    }

    /// Identifies the cluster: its URL, the kube-system namespace's uid and its version.
    pub async fn info(&self) -> Result<ClusterInfo> {
        let version = self
            .client
            .apiserver_version()
            .await
            .map_err(|e| self.unreachable(&e))?;
        Ok(ClusterInfo {
            server: self.server.clone(),
            uid: self.uid().await?,
            version: version.git_version,
        })
    }

    /// The uid of the kube-system namespace: a stable identity of the cluster (None when
    /// this client may not read it).
    pub async fn uid(&self) -> Result<Option<String>> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        match namespaces.get_opt("kube-system").await {
            Ok(ns) => Ok(ns.and_then(|n| n.metadata.uid)),
            Err(kube::Error::Api(ae)) if ae.code == 403 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// An error for a request that found no API server: transport failures name the
    /// server, API answers stay what they are.
    pub(crate) fn unreachable(&self, e: &kube::Error) -> Error {
        match e {
            kube::Error::Api(_) => Error::from_kube_ref(e),
            _ => Error::Unreachable {
                server: self.server.clone(),
                cause: crate::one_line_cause(e),
            },
        }
    }
}

async fn config_for(access: &ClusterAccess) -> Result<Config> {
    let options = KubeConfigOptions {
        context: access.context.clone(),
        ..Default::default()
    };
    match &access.source {
        KubeconfigSource::Files(paths) => {
            let Some((first, rest)) = paths.split_first() else {
                return Err(Error::Kubeconfig {
                    path: String::new(),
                    cause: "no kubeconfig file given".into(),
                });
            };
            let read = |p: &PathBuf| {
                Kubeconfig::read_from(p).map_err(|e| Error::Kubeconfig {
                    path: p.display().to_string(),
                    cause: crate::one_line_cause(&e),
                })
            };
            let mut kc = read(first)?;
            for p in rest {
                kc = kc.merge(read(p)?).map_err(|e| Error::Kubeconfig {
                    path: p.display().to_string(),
                    cause: crate::one_line_cause(&e),
                })?;
            }
            let names = paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":");
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| Error::Kubeconfig {
                    path: names,
                    cause: crate::one_line_cause(&e),
                })
        }
        KubeconfigSource::InCluster => Config::incluster().map_err(|e| Error::Kubeconfig {
            path: "in-cluster configuration".into(),
            cause: crate::one_line_cause(&e),
        }),
        KubeconfigSource::Infer => Config::infer().await.map_err(|e| Error::Kubeconfig {
            path: "inferred configuration".into(),
            cause: crate::one_line_cause(&e),
        }),
    }
}
