//! The real control plane: etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler from `KUBEBUILDER_ASSETS`, on 127.0.0.1 with free ports.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::certs::{self, Ca, CertFiles};
use crate::process::{Managed, free_port};

const BINARIES: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// The control-plane processes and what the rest of the cluster needs from them.
pub struct ControlPlane {
    processes: Vec<Managed>,
    /// An admin client of the API server.
    pub client: Client,
    /// The admin kubeconfig file.
    pub kubeconfig: PathBuf,
    /// The API server's port on 127.0.0.1.
    pub api_port: u16,
    /// The cluster CA (signs serving and client certificates).
    pub ca: Ca,
    /// The cluster CA certificate, PEM.
    pub ca_pem: String,
    /// The kubelet's serving certificate, signed by the cluster CA.
    pub kubelet_serving: CertFiles,
    logs: PathBuf,
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A kubeconfig with embedded credentials.
fn kubeconfig_yaml(server: &str, ca_pem: &str, user: &CertFiles) -> String {
    let v = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "coffer-test", "cluster": {
            "server": server,
            "certificate-authority-data": b64(ca_pem),
        }}],
        "users": [{"name": "admin", "user": {
            "client-certificate-data": b64(&user.cert_pem),
            "client-key-data": b64(&user.key_pem),
        }}],
        "contexts": [{"name": "coffer-test", "context": {"cluster": "coffer-test", "user": "admin"}}],
        "current-context": "coffer-test",
        "preferences": {},
    });
    serde_yaml::to_string(&v).expect("kubeconfig yaml")
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler from
    /// `assets` with their files under `root`, and waits (up to `timeout`) until the API
    /// server is ready. A component that lost its port to another process between the
    /// port's choice and its bind (tests start clusters side by side, and every outgoing
    /// connection takes a port from the same range) is a fresh start on new ports, up to
    /// three times.
    pub async fn start(root: &Path, assets: &Path, timeout: Duration) -> Result<ControlPlane> {
        let mut attempt = 1;
        loop {
            match Self::start_once(root, assets, timeout).await {
                Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => {
                    tracing::warn!(attempt, error = %e, "a control-plane port was taken; starting again");
                    let _ = std::fs::remove_dir_all(root.join("etcd"));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_once(root: &Path, assets: &Path, timeout: Duration) -> Result<ControlPlane> {
        for b in BINARIES {
            let p = assets.join(b);
            if !p.is_file() {
                bail!(
                    "{} not found: KUBEBUILDER_ASSETS ({}) must hold etcd, kube-apiserver, \
                     kube-controller-manager and kube-scheduler (e.g. `export KUBEBUILDER_ASSETS=$(../shared/k8s/assets)`)",
                    p.display(),
                    assets.display()
                );
            }
        }
        let pki = root.join("pki");
        let logs = root.join("logs");
        let etcd_dir = root.join("etcd");
        for d in [&pki, &logs, &etcd_dir] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let ca = Ca::create(&pki, "coffer-test-ca")?;
        let apiserver_cert = ca.serving(
            &pki,
            "apiserver",
            &[
                "127.0.0.1",
                "localhost",
                "10.96.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )?;
        let kubelet_serving = ca.serving(
            &pki,
            "kubelet",
            &["127.0.0.1", "localhost", crate::NODE_NAME],
        )?;
        let admin = ca.client(&pki, "admin", "coffer-admin", &["system:masters"])?;
        let kubelet_client = ca.client(
            &pki,
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            &["system:masters"],
        )?;
        let (sa_key, sa_pub) = certs::service_account_keys(&pki)?;

        let etcd_port = free_port()?;
        let etcd_peer = free_port()?;
        let api_port = free_port()?;
        let kcm_port = free_port()?;
        let sched_port = free_port()?;
        let p = |x: &Path| x.display().to_string();

        let mut processes = Vec::new();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        processes.push(Managed::spawn(
            "etcd",
            &assets.join("etcd"),
            &[
                "--name=default".into(),
                format!("--data-dir={}", p(&etcd_dir)),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync=true".into(),
                "--logger=zap".into(),
                "--log-level=warn".into(),
            ],
            &logs.join("etcd.log"),
        )?);

        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = root.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(&server, &ca.cert_pem, &admin))?;
        processes.push(Managed::spawn(
            "kube-apiserver",
            &assets.join("kube-apiserver"),
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", p(&pki)),
                format!("--tls-cert-file={}", p(&apiserver_cert.cert_path)),
                format!("--tls-private-key-file={}", p(&apiserver_cert.key_path)),
                format!("--client-ca-file={}", p(&ca.cert_path)),
                "--authorization-mode=Node,RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", p(&sa_pub)),
                format!("--service-account-signing-key-file={}", p(&sa_key)),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--endpoint-reconciler-type=none".into(),
                "--allow-privileged=true".into(),
                "--kubelet-preferred-address-types=InternalIP".into(),
                format!("--kubelet-certificate-authority={}", p(&ca.cert_path)),
                format!(
                    "--kubelet-client-certificate={}",
                    p(&kubelet_client.cert_path)
                ),
                format!("--kubelet-client-key={}", p(&kubelet_client.key_path)),
                "--enable-priority-and-fairness=false".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
            &logs.join("kube-apiserver.log"),
        )?);
        processes.push(Managed::spawn(
            "kube-controller-manager",
            &assets.join("kube-controller-manager"),
            &[
                format!("--kubeconfig={}", p(&kubeconfig)),
                format!("--authentication-kubeconfig={}", p(&kubeconfig)),
                format!("--authorization-kubeconfig={}", p(&kubeconfig)),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={kcm_port}"),
                "--leader-elect=false".into(),
                "--controllers=*,-service-ca-cert-publisher".into(),
                "--use-service-account-credentials=false".into(),
                format!("--service-account-private-key-file={}", p(&sa_key)),
                format!("--root-ca-file={}", p(&ca.cert_path)),
                format!("--cluster-signing-cert-file={}", p(&ca.cert_path)),
                format!("--cluster-signing-key-file={}", p(&ca.key_path)),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
            &logs.join("kube-controller-manager.log"),
        )?);
        processes.push(Managed::spawn(
            "kube-scheduler",
            &assets.join("kube-scheduler"),
            &[
                format!("--kubeconfig={}", p(&kubeconfig)),
                format!("--authentication-kubeconfig={}", p(&kubeconfig)),
                format!("--authorization-kubeconfig={}", p(&kubeconfig)),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={sched_port}"),
                "--leader-elect=false".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
            &logs.join("kube-scheduler.log"),
        )?);

        let kc = Kubeconfig::read_from(&kubeconfig)?;
        let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        config.read_timeout = Some(Duration::from_secs(60));
        let client = Client::try_from(config)?;
        let ca_pem = ca.cert_pem.clone();
        let mut cp = ControlPlane {
            processes,
            client,
            kubeconfig,
            api_port,
            ca,
            ca_pem,
            kubelet_serving,
            logs,
        };
        if let Err(e) = cp.wait_ready(timeout).await {
            cp.stop().await;
            return Err(e);
        }
        Ok(cp)
    }

    fn check_alive(&mut self) -> Result<()> {
        for proc in &mut self.processes {
            if let Some(status) = proc.exited() {
                let log = self.logs.join(format!("{}.log", proc.name));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "{} exited ({status}) during start-up; last lines of {}:\n{}",
                    proc.name,
                    log.display(),
                    tail.join("\n")
                );
            }
        }
        Ok(())
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            let req = http::Request::get("/readyz").body(Vec::new())?;
            match self.client.request_text(req).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(_) | Err(_) if Instant::now() < deadline => {}
                Ok(body) => bail!("kube-apiserver not ready after {timeout:?}: {body}"),
                Err(e) => bail!("kube-apiserver not ready after {timeout:?}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Installs every CRD in `files` ((name, YAML) pairs) and waits until each is Established.
    pub async fn install_crds(&self, files: &[(String, String)]) -> Result<()> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let mut names = Vec::new();
        for (path, text) in files {
            for doc in serde_yaml::Deserializer::from_str(text) {
                let value = serde_yaml::Value::deserialize(doc)?;
                if value.is_null() {
                    continue;
                }
                let crd: CustomResourceDefinition = serde_yaml::from_value(value)
                    .with_context(|| format!("parsing CRD in {path}"))?;
                let name = crd.metadata.name.clone().context("CRD without name")?;
                api.patch(
                    &name,
                    &PatchParams::apply("coffer-testcluster").force(),
                    &Patch::Apply(&crd),
                )
                .await
                .with_context(|| format!("installing CRD {name} from {path}"))?;
                names.push(name);
            }
        }
        for name in names {
            let cond = kube::runtime::wait::conditions::is_crd_established();
            tokio::time::timeout(
                Duration::from_secs(30),
                kube::runtime::wait::await_condition(api.clone(), &name, cond),
            )
            .await
            .with_context(|| format!("CRD {name} not established after 30 s"))??;
        }
        Ok(())
    }

    /// Waits until the ServiceAccount controller has created `default/default`, so that
    /// pods can be created in the default namespace right away.
    pub async fn wait_default_service_account(&mut self) -> Result<()> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), "default");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.check_alive()?;
            if api.get_opt("default").await?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "ServiceAccount default/default not created within 60 s (kube-controller-manager log in {})",
                    self.logs.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process ids of the control-plane processes.
    pub fn pids(&self) -> Vec<i32> {
        self.processes.iter().map(|p| p.pid()).collect()
    }

    /// Stops the processes in reverse start order.
    pub async fn stop(&mut self) {
        while let Some(mut p) = self.processes.pop() {
            p.stop(Duration::from_secs(5)).await;
        }
    }

    /// Kills every process at once (SIGKILL), for drop and panic paths.
    pub fn kill_now(&mut self) {
        while let Some(mut p) = self.processes.pop() {
            p.kill_now();
        }
    }
}

use serde::Deserialize as _;
