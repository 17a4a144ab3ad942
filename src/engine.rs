//! What host_container must learn about the engine itself, because the address does not tell:
//! a `unix://` socket may lead into another mount namespace and a `tcp://` engine may be local.
//! Whether the engine sees this machine's files is probed once (a marker written here, looked
//! for through a bind mount) and remembered per engine; a small helper image, imported from a
//! stream rather than pulled, gives the probe and the engine-side lock a container to create.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use crate::docker::{self, Captured};
use crate::error::{Error, Kind};
use crate::names::LABEL_PREFIX;

/// An image with no files, made by `docker import` from a stream. Containers of it are created,
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
    text.contains("no such image") || text.contains("unable to find image")
}

/// `docker container create …` of the helper image, importing the image first if the engine
/// lacks it (one extra call, once per engine).
pub fn create_helper_container(head: &[String], options: &[String]) -> anyhow::Result<Captured> {
    // Never pull: the helper image is imported, and no registry may be reachable.
    let mut create = argv(head, &["container", "create", "--pull=never"]);
    create.extend(options.iter().cloned());
    create.extend([HELPER_IMAGE.to_owned(), "/none".to_owned()]);
    let answer = docker::capture(&create)?;
    if answer.success() || !no_such_image(&answer) {
        return Ok(answer);
    }
    import_helper_image(head)?;
    docker::capture(&create)
}

fn import_helper_image(head: &[String]) -> anyhow::Result<()> {
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    header.set_mtime(0);
    archive.append_data(&mut header, "hc/", std::io::empty())?;
    let bytes = archive.into_inner()?;
    let label = format!("LABEL {LABEL_PREFIX}.role=helper");
    let import = argv(head, &["import", "--change", &label, "-", HELPER_IMAGE]);
    let output = duct::cmd(&import[0], &import[1..])
        .stdin_bytes(bytes)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .map_err(|e| docker::spawn_error(&import[0], e))?;
    if output.status.success() {
        prune_replaced_helper_images(head);
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(Error::new(
        docker::classify(&stderr).unwrap_or(Kind::StepFailed),
        format!(
            "creating the helper image {HELPER_IMAGE}: {}",
            stderr.trim()
        ),
    )
    .into())
}

/// Clients that find the helper image missing at the same time each import one, and the tag
/// ends on the last: the others' images stay behind, untagged. A prune of dangling helper images
/// removes them (never one a container uses). Best effort: an image left here only costs a name
/// in `docker images`.
fn prune_replaced_helper_images(head: &[String]) {
    let filter = format!("--filter=label={LABEL_PREFIX}.role=helper");
    let _ = docker::capture(&argv(head, &["image", "prune", "--force", &filter]));
}

/// The engine's own id (`docker info`), which names it in the cache whatever its address.
fn engine_id(head: &[String]) -> anyhow::Result<String> {
    let answer = docker::capture(&argv(head, &["info", "--format", "{{.ID}}"]))?;
    if !answer.success() {
        return Err(Error::new(
            docker::classify(&answer.stderr).unwrap_or(Kind::EngineUnreachable),
            format!("asking the engine who it is: {}", answer.stderr.trim()),
        )
        .into());
    }
    let id: String = answer
        .stdout
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    Ok(id)
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
    let created = create_helper_container(head, &[format!("--name={name}"), mount])?;
    if !created.success() {
        if let Some(kind @ (Kind::EngineUnreachable | Kind::DockerMissing)) =
            docker::classify(&created.stderr)
        {
            return Err(Error::new(kind, created.stderr.trim().to_owned()).into());
        }
        // The engine has no such directory: `--mount` refuses a missing bind source.
        return Ok(false);
    }
    let copied = docker::capture(&argv(head, &["cp", &format!("{name}:/probe/marker"), "-"]));
    let _ = docker::capture(&argv(head, &["rm", "--force", &name]));
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
