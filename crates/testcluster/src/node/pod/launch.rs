//! What a container runs: image, command and args with `$(VAR)` expansion, environment
//! (values, ConfigMap and Secret references, the downward API), working directory and
//! mounts, resolved from the pod spec.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use k8s_openapi::api::core::v1::{Container, Pod};

use super::status::PodRuntime;
use super::volumes::{config_map_data, field_value, secret_data};
use crate::node::Node;

/// Is this image Coffer's own (`coffer`, `*/coffer`, any tag or digest)?
pub fn is_coffer_image(image: &str) -> bool {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    let repo = last.split(':').next().unwrap_or(last);
    repo == "coffer"
}

/// Where a pod volume comes from on the host.
#[derive(Clone, Debug)]
pub(super) struct VolSource {
    pub(super) path: PathBuf,
    pub(super) block: bool,
}

pub(super) struct Mount {
    pub(super) src: PathBuf,
    pub(super) dst: String,
    pub(super) read_only: bool,
    pub(super) file: bool,
}

pub(super) struct Launch {
    pub(super) program: String,
    pub(super) args: Vec<String>,
    pub(super) env: Vec<(String, String)>,
    pub(super) workdir: String,
    pub(super) mounts: Vec<Mount>,
    pub(super) hostname: String,
}

/// `$(VAR)` expansion as Kubernetes does it for command, args and env values.
pub(super) fn expand(s: &str, env: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(a) = after.strip_prefix('(') {
            if let Some(end) = a.find(')') {
                let name = &a[..end];
                match env.get(name) {
                    Some(v) => out.push_str(v),
                    None => {
                        out.push_str("$(");
                        out.push_str(name);
                        out.push(')');
                    }
                }
                rest = &a[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

pub(super) async fn build_launch(
    node: &Node,
    rt: &PodRuntime,
    pod: &Pod,
    c: &Container,
    vols: &HashMap<String, VolSource>,
) -> Result<Launch> {
    let client = node.cfg.client.clone();
    let ns = &rt.namespace;
    let port = node.cfg.api_port.to_string();
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOME".into(), "/root".into()),
        ("HOSTNAME".into(), rt.name.clone()),
        ("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()),
        ("KUBERNETES_SERVICE_PORT".into(), port.clone()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.clone()),
        ("KUBERNETES_PORT".into(), format!("tcp://127.0.0.1:{port}")),
    ];
    let mut map: HashMap<String, String> = env.iter().cloned().collect();
    let set = |env: &mut Vec<(String, String)>,
               map: &mut HashMap<String, String>,
               k: String,
               v: String| {
        env.retain(|(n, _)| *n != k);
        map.insert(k.clone(), v.clone());
        env.push((k, v));
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let mut data = BTreeMap::new();
        if let Some(r) = &from.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            data.extend(config_map_data(&client, ns, &r.name, optional, false).await?);
        }
        if let Some(r) = &from.secret_ref {
            data.extend(secret_data(&client, ns, &r.name, r.optional.unwrap_or(false)).await?);
        }
        for (k, v) in data {
            let v = String::from_utf8_lossy(&v).into();
            set(&mut env, &mut map, format!("{prefix}{k}"), v);
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(vf) = &e.value_from {
            let keyed = if let Some(r) = &vf.config_map_key_ref {
                let optional = r.optional.unwrap_or(false);
                let files = config_map_data(&client, ns, &r.name, optional, false).await?;
                Some(("ConfigMap", &r.name, &r.key, optional, files))
            } else if let Some(r) = &vf.secret_key_ref {
                let optional = r.optional.unwrap_or(false);
                let files = secret_data(&client, ns, &r.name, optional).await?;
                Some(("Secret", &r.name, &r.key, optional, files))
            } else {
                None
            };
            if let Some((kind, name, key, optional, files)) = keyed {
                match files.get(key) {
                    Some(v) => String::from_utf8_lossy(v).into(),
                    None if optional => continue,
                    None => bail!("couldn't find key {key} in {kind} {ns}/{name}"),
                }
            } else if let Some(f) = &vf.field_ref {
                field_value(pod, &f.field_path)?
            } else if vf.resource_field_ref.is_some() {
                "0".into()
            } else {
                String::new()
            }
        } else {
            expand(e.value.as_deref().unwrap_or(""), &map)
        };
        set(&mut env, &mut map, e.name.clone(), value);
    }
    let command: Vec<String> = c
        .command
        .iter()
        .flatten()
        .map(|s| expand(s, &map))
        .collect();
    let args: Vec<String> = c.args.iter().flatten().map(|s| expand(s, &map)).collect();
    let image = c.image.clone().unwrap_or_default();
    let (program, args) = if let Some((first, rest)) = command.split_first() {
        (first.clone(), rest.iter().cloned().chain(args).collect())
    } else if is_coffer_image(&image) {
        let bin = node.cfg.coffer_bin.clone().ok_or_else(|| {
            anyhow!("image {image} has no known entrypoint: the coffer binary is not configured (set COFFER_BIN or Options::coffer_bin)")
        })?;
        (bin.display().to_string(), args)
    } else {
        bail!(
            "image {image} has no known entrypoint: the simulated node runs no images, give the container a command"
        );
    };
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let v = vols
            .get(&m.name)
            .ok_or_else(|| anyhow!("volumeMount {}: no volume of that name", m.name))?;
        let mut src = v.path.clone();
        if let Some(sp) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            src = src.join(sp);
            if !v.block {
                std::fs::create_dir_all(&src)?;
            }
        }
        mounts.push(Mount {
            src,
            dst: m.mount_path.clone(),
            read_only: m.read_only.unwrap_or(false),
            file: v.block,
        });
    }
    for d in c.volume_devices.iter().flatten() {
        let v = vols
            .get(&d.name)
            .ok_or_else(|| anyhow!("volumeDevice {}: no volume of that name", d.name))?;
        mounts.push(Mount {
            src: v.path.clone(),
            dst: d.device_path.clone(),
            read_only: false,
            file: true,
        });
    }
    let workdir = c
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    let hostname = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .unwrap_or_else(|| rt.name.clone());
    Ok(Launch {
        program,
        args,
        env,
        workdir,
        mounts,
        hostname,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn coffer_images() {
        assert!(is_coffer_image("coffer"));
        assert!(is_coffer_image("coffer:0.1"));
        assert!(is_coffer_image("ghcr.io/x/coffer:latest"));
        assert!(is_coffer_image("localhost:5000/coffer"));
        assert!(is_coffer_image("reg/coffer@sha256:abc"));
        assert!(!is_coffer_image("busybox"));
        assert!(!is_coffer_image("coffer/other"));
    }

    #[test]
    pub(super) fn expansion() {
        let env: HashMap<String, String> = [("A".to_string(), "x".to_string())].into();
        assert_eq!(expand("$(A)-$(B)-$$(A)", &env), "x-$(B)-$(A)");
    }
}
