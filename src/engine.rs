//! What host_container must learn about the engine itself, because the address does not tell:
//! a `unix://` socket may lead into another mount namespace and a `tcp://` engine may be local.
//! Whether the engine sees this machine's files is probed once (a marker written here, looked
//! for through a bind mount) and remembered per engine; a small helper image, loaded from an
//! archive made here rather than pulled, gives the probe and the engine-side lock a container to
//! create. The engine's kind (Docker or Podman, rootful or rootless) is asked here too, and
//! remembered the same way.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::docker;
use crate::engine_kind::{EngineKind, Identity};
use crate::error::{Error, Kind};
use crate::names::LABEL_PREFIX;
use crate::process::{self, Captured};

/// An image with no files, loaded from an archive made here (`helper_archive`). Containers of it are created,
/// never started: as a lock object, or to look into a bind mount with `docker cp`.
pub const HELPER_IMAGE: &str = "host_container/helper:1";

/// `head` + `rest`, as owned argv.
pub fn argv(head: &[String], rest: &[&str]) -> Vec<String> {
    head.iter()
        .cloned()
        .chain(rest.iter().map(|s| (*s).to_owned()))
        .collect()
}

/// Whether docker's answer says an image is missing.
fn no_such_image(answer: &Captured) -> bool {
    let text = answer.stderr.to_ascii_lowercase();
    // Podman: "IMAGE: image not known".
    text.contains("no such image")
        || text.contains("unable to find image")
        || text.contains("image not known")
}

/// How a docker call is run: `process::capture` (as long as it takes) or `process::query` (within
/// the engine deadline).
pub type Run = fn(&[String]) -> anyhow::Result<Captured>;

/// `docker container create …` of the helper image, loading the image first if the engine
/// lacks it (one extra call, once per engine). `run` runs the create: the visibility probe's
/// throw-away container is a question, asked within the engine deadline; the lock is not.
pub fn create_helper_container(
    head: &[String],
    options: &[String],
    run: Run,
) -> anyhow::Result<Captured> {
    // Never pull: the helper image is loaded from an archive, and no registry may be reachable.
    let mut create = argv(head, &["container", "create", "--pull=never"]);
    create.extend(options.iter().cloned());
    create.extend([HELPER_IMAGE.to_owned(), "/none".to_owned()]);
    let answer = run(&create)?;
    if answer.success() || !no_such_image(&answer) {
        return Ok(answer);
    }
    load_helper_image(head)?;
    run(&create)
}

/// Loads the helper image from an archive made here. The archive is the same bytes on every
/// client of one engine architecture, so the image id is too: clients that find the image
/// missing at once all load the same image and the tag never moves from one to another (an
/// import's id holds its creation time, and racing imports left untagged images behind).
fn load_helper_image(head: &[String]) -> anyhow::Result<()> {
    let architecture = engine_architecture(head);
    let archive = helper_archive(&architecture)?;
    let load = argv(head, &["load", "--quiet"]);
    let output = process::capture_fed(&load, archive)?;
    if output.success() {
        prune_replaced_helper_images(head);
        return Ok(());
    }
    let stderr = output.stderr;
    Err(Error::new(
        docker::classify(&stderr).unwrap_or(Kind::StepFailed),
        format!(
            "creating the helper image {HELPER_IMAGE}: {}",
            stderr.trim()
        ),
    )
    .into())
}

/// Whether the engine behind `head` (docker and its global options) answers at all.
pub fn answers(head: &[String]) -> bool {
    process::query(&argv(head, &["version", "--format", "{{.Server.Version}}"]))
        .is_ok_and(|c| c.success())
}

/// The engine's architecture as images name it (`amd64`, `arm64`), which may not be this
/// machine's; failing an answer, this machine's, as the engine most often runs here.
fn engine_architecture(head: &[String]) -> String {
    let asked = process::query(&argv(head, &["version", "--format", "{{.Server.Arch}}"]));
    match asked {
        Ok(answer) if answer.success() && is_architecture(answer.stdout.trim()) => {
            answer.stdout.trim().to_owned()
        }
        _ => match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        }
        .to_owned(),
    }
}

fn is_architecture(word: &str) -> bool {
    !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A `docker save` archive of an image with one empty directory: the layer, its config (no
/// timestamps anywhere, so its digest, the image id, depends on the architecture alone) and the
/// manifest that tags it.
fn helper_archive(architecture: &str) -> anyhow::Result<Vec<u8>> {
    let layer = tar_in_memory(&[("hc/", None)])?;
    let diff_id = crate::tree::hex(&Sha256::digest(&layer));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": architecture,
        "os": "linux",
        "config": { "Labels": { format!("{LABEL_PREFIX}.role"): "helper" } },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
    }))?;
    let config_name = format!("{}.json", crate::tree::hex(&Sha256::digest(&config)));
    let layer_name = format!("{diff_id}/layer.tar");
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": [HELPER_IMAGE],
        "Layers": [layer_name],
    }]))?;
    let archive = tar_in_memory(&[
        (&format!("{diff_id}/"), None),
        (&layer_name, Some(&layer)),
        (&config_name, Some(&config)),
        ("manifest.json", Some(&manifest)),
    ])?;
    Ok(archive)
}

/// A tar of directories (None) and files, with fixed modes and times.
fn tar_in_memory(entries: &[(&str, Option<&[u8]>)]) -> std::io::Result<Vec<u8>> {
    let mut archive = tar::Builder::new(Vec::new());
    for (name, content) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        match content {
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                archive.append_data(&mut header, name, std::io::empty())?;
            }
            Some(bytes) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(bytes.len() as u64);
                archive.append_data(&mut header, name, *bytes)?;
            }
        }
    }
    archive.into_inner()
}

/// Untagged helper images that racing imports of older versions left (each import's id was its
/// own) are removed with the next load; never one a container uses. Best effort: one left here
/// only costs a line in `docker images`.
fn prune_replaced_helper_images(head: &[String]) {
    let filter = format!("--filter=label={LABEL_PREFIX}.role=helper");
    let _ = process::capture(&argv(head, &["image", "prune", "--force", &filter]));
}

/// The engine's own id (from `info`), which names it in the cache whatever its address.
fn engine_id(head: &[String]) -> anyhow::Result<String> {
    Ok(identity(head)?.id)
}

/// The engine's identity, asked with one `info`.
pub fn identity(head: &[String]) -> anyhow::Result<Identity> {
    let argv = argv(head, &["info", "--format", "{{json .}}"]);
    let answer = process::query(&argv)?;
    if !answer.success() {
        return Err(Error::new(
            docker::classify(&answer.stderr).unwrap_or(Kind::EngineUnreachable),
            format!("asking the engine who it is: {}", answer.stderr.trim()),
        )
        .into());
    }
    // An answer that is not `info`'s JSON still names an engine (by its text, as `{{.ID}}`
    // did), whose kind is then asked through the Docker API.
    Ok(
        crate::engine_kind::identity_of(&answer.stdout).unwrap_or_else(|| Identity {
            id: crate::engine_kind::sanitize(answer.stdout.trim()),
            kind: None,
        }),
    )
}

fn probe_docker_api(head: &[String]) -> anyhow::Result<EngineKind> {
    let info = process::query(&argv(head, &["info", "--format", "{{json .}}"]))?;
    let version = process::query(&argv(
        head,
        &["version", "--format", "{{json .Server.Components}}"],
    ))?;
    Ok(crate::engine_kind::kind_of_docker_api(
        &info.stdout,
        &version.stdout,
    ))
}

/// How long the kind remembered for an address is trusted without asking: `podman info` takes a
/// third of a second (it is most of what `single` on Podman would add to a `podman run`), and
/// an engine of another kind behind the same address within an hour is rare; after an hour
/// the engine is asked again.
const ADDRESS_TRUSTED: std::time::Duration = std::time::Duration::from_secs(3600);

/// The variables that choose the engine a client program talks to.
const ADDRESS_VARIABLES: &[&str] = &[
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "CONTAINER_HOST",
    "CONTAINER_CONNECTION",
    "CONTAINERS_CONF",
];

/// The engine's kind. Remembered per address (the client program, its options, the variables
/// that choose the engine, the user) for `ADDRESS_TRUSTED`, so a run usually asks nothing;
/// otherwise asked with `info` (and, on the Docker API, `version` once per engine id).
pub fn probe_kind(head: &[String], cache_dir: &Path) -> anyhow::Result<EngineKind> {
    let engines = cache_dir.join("engines");
    let by_address = engines.join(format!("address-{}.kind", address_key(head)));
    let fresh = fs::metadata(&by_address)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < ADDRESS_TRUSTED));
    let read = |path: &Path| {
        fs::read_to_string(path)
            .ok()
            .and_then(|text| crate::engine_kind::read_remembered(&text))
    };
    if let Some(kind) = read(&by_address).filter(|_| fresh) {
        return Ok(kind);
    }
    let identity = identity(head)?;
    let by_id = engines.join(format!("{}.kind", identity.id));
    let kind = match identity.kind.or_else(|| read(&by_id)) {
        Some(kind) => kind,
        None => probe_docker_api(head)?,
    };
    // Only a cache: failing to remember means asking again next time.
    let text = crate::engine_kind::remembered_text(kind);
    let _ = fs::create_dir_all(&engines)
        .and_then(|()| fs::write(&by_id, &text))
        .and_then(|()| fs::write(&by_address, &text));
    Ok(kind)
}

/// A digest naming the engine's address as this client sees it.
fn address_key(head: &[String]) -> String {
    let mut address = head.join("\0");
    for name in ADDRESS_VARIABLES {
        address.push_str(&format!(
            "\0{name}={}",
            std::env::var(name).unwrap_or_default()
        ));
    }
    // SAFETY: geteuid cannot fail.
    address.push_str(&format!("\0uid={}", unsafe { libc::geteuid() }));
    crate::tree::hex(&Sha256::digest(address.as_bytes()))[..24].to_owned()
}

/// Whether the engine sees this machine's files, asked once per engine and remembered in
/// `cache_dir`.
pub fn sees_client_files(head: &[String], cache_dir: &Path) -> anyhow::Result<bool> {
    let id = engine_id(head)?;
    let remembered = cache_dir
        .join("engines")
        .join(format!("{id}.sees-client-files"));
    if let Ok(answer) = fs::read_to_string(&remembered) {
        match answer.trim() {
            "yes" => return Ok(true),
            "no" => return Ok(false),
            _ => {}
        }
    }
    let sees = probe_visibility(head)?;
    if let Some(dir) = remembered.parent() {
        // Only a cache: failing to remember means asking again next time.
        let _ = fs::create_dir_all(dir)
            .and_then(|()| fs::write(&remembered, if sees { "yes\n" } else { "no\n" }));
    }
    Ok(sees)
}

/// Writes a marker with random content into a fresh directory here, bind-mounts that directory
/// into a created (never started) helper container and reads the marker back with `docker cp`.
fn probe_visibility(head: &[String]) -> anyhow::Result<bool> {
    let dir = tempfile::Builder::new()
        .prefix("host_container-probe-")
        .tempdir()
        .map_err(|e| Error::new(Kind::Io, format!("creating a probe directory: {e}")))?;
    let token = crate::cli::fresh_token();
    let mut marker = fs::File::create(dir.path().join("marker"))
        .map_err(|e| Error::new(Kind::Io, format!("writing the probe marker: {e}")))?;
    marker.write_all(token.as_bytes())?;
    drop(marker);
    let name = format!("host_container-probe-{token}");
    let mount = format!(
        "--mount=type=bind,{},target=/probe,readonly",
        crate::template::mount_option("source", &dir.path().display().to_string())
    );
    let created =
        create_helper_container(head, &[format!("--name={name}"), mount], process::query)?;
    if !created.success() {
        if let Some(kind @ (Kind::EngineUnreachable | Kind::DockerMissing)) =
            docker::classify(&created.stderr)
        {
            return Err(Error::new(kind, created.stderr.trim().to_owned()).into());
        }
        // The engine has no such directory: `--mount` refuses a missing bind source.
        return Ok(false);
    }
    let copied = process::query(&argv(head, &["cp", &format!("{name}:/probe/marker"), "-"]));
    let _ = process::query(&argv(head, &["rm", "--force", &name]));
    let copied = copied?;
    // `docker cp … -` answers with a tar archive holding the file.
    Ok(copied.success() && copied.stdout.contains(&token))
}

/// The client paths an argv bind-mounts (`-v /x:…`, `--volume=/x:…`, `--mount type=bind,…`).
/// Named volumes never start with `/`, so an absolute source is a path of this machine.
pub fn client_paths(argv: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let mut args = argv.iter().peekable();
    while let Some(arg) = args.next() {
        let (option, value) = match arg.split_once('=') {
            Some((option, value)) if option.starts_with("--") => (option, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        let value = match option {
            "-v" | "--volume" | "--mount" => value.or_else(|| args.next().cloned()),
            _ => continue,
        };
        let Some(value) = value else { continue };
        let source = if option == "--mount" {
            mount_bind_source(&value)
        } else {
            value.split(':').next().map(str::to_owned)
        };
        if let Some(source) = source.filter(|s| s.starts_with('/')) {
            found.push(source);
        }
    }
    found
}

/// The source of a `--mount` value when it is a bind mount.
fn mount_bind_source(value: &str) -> Option<String> {
    let fields = csv_fields(value);
    let is_bind = fields
        .iter()
        .any(|f| f == "type=bind" || f == "type=\"bind\"");
    if !is_bind {
        return None;
    }
    fields.into_iter().find_map(|field| {
        let (key, value) = field.split_once('=')?;
        matches!(key, "source" | "src").then(|| value.to_owned())
    })
}

/// The fields of one CSV record, as docker reads `--mount` (quotes, doubled to escape).
fn csv_fields(value: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                if let Some(f) = fields.last_mut() {
                    f.push('"');
                }
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields
}

/// The error for a step that needs this machine's files on an engine that cannot see them.
pub fn cannot_see_files(step: &str, paths: &[String], head: &[String]) -> Error {
    let engine = head[1..].join(" ");
    let address = std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .map(|h| format!(" (DOCKER_HOST={h})"))
        .unwrap_or_default();
    Error::new(
        Kind::EngineCannotSeeFiles,
        format!(
            "step `{step}` bind-mounts {} from this machine, but the Docker engine{address}{} \
             cannot see this machine's files: it would run on an empty or different directory",
            paths.join(", "),
            if engine.is_empty() {
                String::new()
            } else {
                format!(" ({engine})")
            }
        ),
    )
    .note(
        "run it against an engine on this machine (unset DOCKER_HOST / DOCKER_CONTEXT, or pass \
         --context default), or use a mode whose files reach the engine through volumes \
         (`single`, `bash`, `test` send the variant's hosts directory themselves)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Every client makes the same archive for one architecture, so racing loads agree on the
    /// image id; the manifest names the config by its digest and tags the helper image.
    #[test]
    fn the_helper_archive_is_the_same_bytes_every_time() {
        let archive = helper_archive("amd64").unwrap();
        assert_eq!(archive, helper_archive("amd64").unwrap());
        assert_ne!(archive, helper_archive("arm64").unwrap());
        let mut files = std::collections::BTreeMap::new();
        for entry in tar::Archive::new(archive.as_slice()).entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            files.insert(name, bytes);
        }
        let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        let config_name = manifest[0]["Config"].as_str().unwrap();
        let config = &files[config_name];
        assert_eq!(
            config_name,
            format!("{}.json", crate::tree::hex(&Sha256::digest(config)))
        );
        assert_eq!(manifest[0]["RepoTags"][0], HELPER_IMAGE);
        let config: serde_json::Value = serde_json::from_slice(config).unwrap();
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(
            config["config"]["Labels"][format!("{LABEL_PREFIX}.role")],
            "helper"
        );
        let layer = &files[manifest[0]["Layers"][0].as_str().unwrap()];
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", crate::tree::hex(&Sha256::digest(layer)))
        );
    }

    #[test]
    fn finds_bind_mounted_client_paths_only() {
        let argv = strings(&[
            "docker",
            "run",
            "--volume=hc-data:/virtualenv:ro",
            "-v",
            "/home/me/p:/home/me/p",
            "--volume=/srv/in:/in:ro",
            "--mount=type=volume,source=named,target=/x",
            "--mount=type=bind,\"source=/a,b\",target=/y",
            "--mount",
            "type=bind,src=/c,dst=/c",
            "image",
            "--volume=/not/an/option/of/docker",
        ]);
        assert_eq!(
            client_paths(&argv[..10]),
            strings(&["/home/me/p", "/srv/in", "/a,b", "/c"])
        );
    }
}
