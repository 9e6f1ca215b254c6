//! Finding a CSI driver's SnapshotMetadata service and getting a token to call it.
//!
//! A driver that offers changed blocks announces its service with a cluster-scoped
//! `SnapshotMetadataService` object (group `cbt.storage.k8s.io`) named after the driver:
//! its address, the CA that signed the server's certificate, and the audience a caller's
//! token must be scoped to. Callers present a ServiceAccount token from the TokenRequest
//! API for that audience; the service checks it with a TokenReview and checks that the
//! account may `get` VolumeSnapshots in the namespace.

use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};

use crate::error::{Error, Result};

/// Where a driver's SnapshotMetadata service is and how to trust it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEndpoint {
    /// `host:port`.
    pub address: String,
    /// PEM of the CA that signed the server's certificate.
    pub ca_pem: Vec<u8>,
    /// The audience callers' tokens must be scoped to.
    pub audience: String,
}

/// The SnapshotMetadataService resource.
pub fn service_resource() -> ApiResource {
    ApiResource {
        group: "cbt.storage.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "cbt.storage.k8s.io/v1beta1".into(),
        kind: "SnapshotMetadataService".into(),
        plural: "snapshotmetadataservices".into(),
    }
}

/// The SnapshotMetadata service of CSI driver `driver`, or None when the driver offers
/// none (or the cluster does not know the resource at all).
pub async fn find(client: &kube::Client, driver: &str) -> Result<Option<ServiceEndpoint>> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &service_resource());
    let obj = match api.get_opt(driver).await {
        Ok(o) => o,
        // The CRD is not installed: no driver offers the service.
        Err(kube::Error::Api(s)) if s.code == 404 => None,
        Err(source) => {
            return Err(Error::Kube {
                what: format!("reading SnapshotMetadataService {driver}"),
                source,
            });
        }
    };
    let Some(obj) = obj else { return Ok(None) };
    let bad = |reason: &str| Error::Service {
        driver: driver.to_string(),
        reason: reason.to_string(),
    };
    let spec = obj.data.get("spec").ok_or_else(|| bad("it has no spec"))?;
    let field = |name: &str| -> Result<String> {
        spec.get(name)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| bad(&format!("spec.{name} is missing")))
    };
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(field("caCert")?)
        .map_err(|_| bad("spec.caCert is not base64"))?;
    Ok(Some(ServiceEndpoint {
        address: field("address")?,
        ca_pem,
        audience: field("audience")?,
    }))
}

/// A token of ServiceAccount `namespace/service_account` scoped to `audience`, valid for
/// `expiration_seconds` (the API server's minimum is 600).
pub async fn request_token(
    client: &kube::Client,
    namespace: &str,
    service_account: &str,
    audience: &str,
    expiration_seconds: i64,
) -> Result<String> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.to_string()],
            expiration_seconds: Some(expiration_seconds),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer: TokenRequest = api
        .create_subresource("token", service_account, &PostParams::default(), &request)
        .await
        .map_err(|source| Error::Kube {
            what: format!(
                "requesting a token of ServiceAccount {namespace}/{service_account} for audience {audience}"
            ),
            source,
        })?;
    answer
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::Service {
            driver: audience.to_string(),
            reason: "the TokenRequest returned no token".into(),
        })
}
