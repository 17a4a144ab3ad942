//! Which engine answers: Docker or Podman, rootful or rootless. It decides how a container runs
//! as the caller (`--user`, `--userns=keep-id`, or root that is the caller), what the tool refuses
//! (a swarm on Podman) and how errors name the engine. What the engine's answers say is read
//! here; `engine` asks (`info` once per engine, remembered in the cache directory as the
//! file-visibility probe is), and `--offline` assumes.

use serde::Serialize;
use serde_json::Value;

/// The engine's product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    Docker,
    Podman,
}

impl Product {
    pub fn name(self) -> &'static str {
        match self {
            Product::Docker => "Docker",
            Product::Podman => "Podman",
        }
    }
}

/// What was found (or assumed) about the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct EngineKind {
    pub product: Product,
    /// The engine runs as an ordinary user: a container's root is that user.
    pub rootless: bool,
    /// Not asked (`--offline`, or the engine did not answer): the kind the client program's name
    /// suggests, rootful.
    pub assumed: bool,
}

impl EngineKind {
    /// What `--offline` assumes: Podman when the client program is called podman, else Docker;
    /// rootful.
    pub fn assumed(program: &str) -> EngineKind {
        EngineKind {
            product: product_of_program(program),
            rootless: false,
            assumed: true,
        }
    }

    /// The `docker run` options that make a container's writes into a bind mount belong to the
    /// caller (`uid`:`gid`), and why, for the plan.
    pub fn as_caller(self, uid: u32, gid: u32) -> (Vec<String>, &'static str) {
        let user = format!("--user={uid}:{gid}");
        match (self.product, self.rootless) {
            (Product::Podman, true) => (
                vec!["--userns=keep-id".into(), user],
                "rootless Podman: --userns=keep-id maps your UID:GID into the container",
            ),
            (Product::Docker, true) => (
                Vec::new(),
                "rootless Docker: the container runs as root, which is you on this machine",
            ),
            _ => (vec![user], "--user with your UID:GID"),
        }
    }

    /// The template variable `engine`.
    pub fn template_value(self, uid: u32, gid: u32) -> Value {
        let (as_caller, why) = self.as_caller(uid, gid);
        serde_json::json!({
            "product": match self.product { Product::Docker => "docker", Product::Podman => "podman" },
            "rootless": self.rootless,
            "assumed": self.assumed,
            "as_caller": as_caller,
            "as_caller_why": why,
        })
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rooted = if self.rootless { "rootless" } else { "rootful" };
        write!(f, "{}, {rooted}", self.product.name())?;
        if self.assumed {
            f.write_str(" (assumed, not asked)")?;
        }
        Ok(())
    }
}

/// Whether `program` is the podman CLI (by its name: `podman`, `/usr/bin/podman`,
/// `podman-remote`), which reads some options differently and takes no `--context`.
pub fn is_podman_cli(program: &str) -> bool {
    let name = std::path::Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(program);
    name.starts_with("podman")
}

fn product_of_program(program: &str) -> Product {
    if is_podman_cli(program) {
        Product::Podman
    } else {
        Product::Docker
    }
}

/// Who the engine is and what kind, from one `info` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Names the engine in the cache whatever its address.
    pub id: String,
    /// The kind, when the answer alone tells (the podman CLI's own `info` does; the Docker API's
    /// `info` of Podman's socket looks like Docker's and `version` tells).
    pub kind: Option<EngineKind>,
}

/// Reads `info --format '{{json .}}'` as printed by the docker CLI or the podman CLI.
pub fn identity_of(info: &str) -> Option<Identity> {
    let value: Value = serde_json::from_str(info.trim()).ok()?;
    if let Some(host) = value.get("host") {
        // The podman CLI: no engine id, but host name and storage root name one engine (a
        // rootless user's storage is their own).
        let hostname = host.get("hostname")?.as_str()?;
        let root = value.pointer("/store/graphRoot")?.as_str()?;
        let rootless = host.pointer("/security/rootless")?.as_bool()?;
        let digest = crate::tree::hex(&<sha2::Sha256 as sha2::Digest>::digest(root.as_bytes()));
        return Some(Identity {
            id: sanitize(&format!("podman-{hostname}-{}", &digest[..16])),
            kind: Some(EngineKind {
                product: Product::Podman,
                rootless,
                assumed: false,
            }),
        });
    }
    let id = value.get("ID")?.as_str()?;
    Some(Identity {
        id: sanitize(id),
        kind: None,
    })
}

pub fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// The kind a Docker-API `info` and `version` show: Podman names its engine component
/// "Podman Engine"; rootless engines list `name=rootless` among their security options.
pub fn kind_of_docker_api(info: &str, components: &str) -> EngineKind {
    let info: Value = serde_json::from_str(info.trim()).unwrap_or(Value::Null);
    let rootless = info
        .get("SecurityOptions")
        .and_then(Value::as_array)
        .is_some_and(|options| {
            options
                .iter()
                .filter_map(Value::as_str)
                .any(|o| o.split(',').any(|part| part == "name=rootless"))
        });
    let podman = components.contains("\"Podman Engine\"");
    EngineKind {
        product: if podman {
            Product::Podman
        } else {
            Product::Docker
        },
        rootless,
        assumed: false,
    }
}

pub fn remembered_text(kind: EngineKind) -> String {
    format!(
        "{} {}\n",
        kind.product.name().to_ascii_lowercase(),
        if kind.rootless { "rootless" } else { "rootful" }
    )
}

pub fn read_remembered(text: &str) -> Option<EngineKind> {
    let mut words = text.split_whitespace();
    let product = match words.next()? {
        "docker" => Product::Docker,
        "podman" => Product::Podman,
        _ => return None,
    };
    let rootless = match words.next()? {
        "rootless" => true,
        "rootful" => false,
        _ => return None,
    };
    Some(EngineKind {
        product,
        rootless,
        assumed: false,
    })
}

/// What `status` of a daemon that is not there says on Podman: how to start it, and that Podman
/// restarts containers after a reboot only through `podman-restart.service`.
pub fn podman_restart_note(
    engine: EngineKind,
    language: &str,
    variant: &str,
    instance: &str,
) -> String {
    let user = if engine.rootless { " --user" } else { "" };
    format!(
        "start it with `host_container{} {} {} daemon`; Podman has no daemon to restart it after \
         a reboot: `systemctl{user} enable podman-restart.service` does (it starts the \
         containers whose restart policy is `always` or `unless-stopped`)",
        if instance == "default" {
            String::new()
        } else {
            format!(" -x {instance}")
        },
        language,
        variant
    )
}

/// A hint for a Podman failure the tool recognizes in its output.
pub fn podman_hint(output: &str) -> Option<&'static str> {
    if output.contains("error setting rlimit") {
        Some(
            "Podman's default ulimits exceed what this machine allows: set lower ones in \
             containers.conf (`default_ulimits = [\"nofile=1024:1024\", \"nproc=1000:1000\"]` \
             under [containers], in ~/.config/containers/containers.conf or the file \
             CONTAINERS_CONF names)",
        )
    } else if output.contains("/etc/subuid")
        || output.contains("/etc/subgid")
        || output.contains("newuidmap")
        || output.contains("no subuid ranges")
    {
        Some(
            "rootless Podman needs subordinate ID ranges for your user: add them with \
             `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER` (or \
             lines in /etc/subuid and /etc/subgid), then `podman system migrate`",
        )
    } else if output.contains("container-init binary not found") {
        Some("`--init` needs catatonit on the engine's host (apt-get install catatonit)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_podman_cli_info_tells_the_kind() {
        let info = r#"{"host": {"hostname": "vm", "security": {"rootless": true}},
                       "store": {"graphRoot": "/home/u/.local/share/containers/storage"}}"#;
        let identity = identity_of(info).unwrap();
        assert!(identity.id.starts_with("podman-vm-"));
        assert_eq!(
            identity.kind,
            Some(EngineKind {
                product: Product::Podman,
                rootless: true,
                assumed: false
            })
        );
        let other = identity_of(&info.replace("/home/u", "/home/v")).unwrap();
        assert_ne!(identity.id, other.id);
    }

    #[test]
    fn the_docker_api_needs_version_for_podman() {
        let info = r#"{"ID": "0b09f886-7d0b", "SecurityOptions": ["name=seccomp,profile=default", "name=rootless"]}"#;
        let identity = identity_of(info).unwrap();
        assert_eq!(identity.id, "0b09f886-7d0b");
        assert_eq!(identity.kind, None);
        let kind = kind_of_docker_api(info, r#"[{"Name":"Podman Engine","Version":"4.3.1"}]"#);
        assert_eq!(kind.product, Product::Podman);
        assert!(kind.rootless);
        let kind = kind_of_docker_api(r#"{"ID":"x"}"#, r#"[{"Name":"Engine"}]"#);
        assert_eq!(kind.product, Product::Docker);
        assert!(!kind.rootless);
        assert!(identity_of("not json").is_none());
    }

    #[test]
    fn files_belong_to_the_caller_on_every_kind() {
        let kind = |product, rootless| EngineKind {
            product,
            rootless,
            assumed: false,
        };
        assert_eq!(
            kind(Product::Docker, false).as_caller(1000, 100).0,
            ["--user=1000:100"]
        );
        assert_eq!(
            kind(Product::Podman, false).as_caller(1000, 100).0,
            ["--user=1000:100"]
        );
        assert_eq!(
            kind(Product::Podman, true).as_caller(1000, 100).0,
            ["--userns=keep-id", "--user=1000:100"]
        );
        assert!(kind(Product::Docker, true)
            .as_caller(1000, 100)
            .0
            .is_empty());
    }

    #[test]
    fn remembered_kinds_read_back() {
        for product in [Product::Docker, Product::Podman] {
            for rootless in [false, true] {
                let kind = EngineKind {
                    product,
                    rootless,
                    assumed: false,
                };
                assert_eq!(read_remembered(&remembered_text(kind)), Some(kind));
            }
        }
        assert_eq!(read_remembered("docker"), None);
        assert_eq!(
            EngineKind::assumed("/usr/bin/podman").product,
            Product::Podman
        );
        assert_eq!(EngineKind::assumed("docker").product, Product::Docker);
    }

    #[test]
    fn podman_failures_get_hints() {
        assert!(
            podman_hint("Error: error setting rlimit type 7: operation not permitted")
                .unwrap()
                .contains("default_ulimits")
        );
        assert!(podman_hint(
            "cannot find UID/GID for user u: no subuid ranges found for user \"u\" in /etc/subuid"
        )
        .unwrap()
        .contains("usermod"));
        assert_eq!(podman_hint("Error: something else"), None);
    }
}
