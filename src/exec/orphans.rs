//! Containers a killed run left behind: a `docker run` outlives its killed client, so before
//! the steps that make state run again (under the instance lock), the copies still running from
//! an interrupted run of those steps are removed.

use crate::error::{Error, Kind};
use crate::mode::DoneKind;
use crate::names::LABEL_PREFIX;
use crate::plan::{Assessment, Plan, Status};
use crate::process;

/// Removes containers that a killed run of one of the `selected` steps left running (a
/// `docker run` outlives its killed client): under the instance lock no live invocation runs
/// those steps, and a second copy must not work on the same volume at the same time.
pub(super) fn stop(plan: &Plan, assessment: &Assessment, selected: &[bool]) -> anyhow::Result<()> {
    let steps: Vec<&str> = (plan.steps.iter().zip(&assessment.steps))
        .zip(selected)
        .filter(|((s, state), selected)| {
            **selected
                && state.status == Status::Run
                // A service's task containers are swarm's: an update replaces them in turn.
                && s.done
                    .as_ref()
                    .is_none_or(|d| d.kind != DoneKind::Container && d.kind != DoneKind::Service)
        })
        .map(|((s, _), _)| s.id.as_str())
        .collect();
    if steps.is_empty() {
        return Ok(());
    }
    let head = plan.docker_head.clone();
    let mut ps = head.clone();
    ps.push("ps".into());
    for (key, value) in [
        ("language", &plan.language),
        ("variant", &plan.variant),
        ("instance", &plan.instance),
    ] {
        ps.push(format!("--filter=label={LABEL_PREFIX}.{key}={value}"));
    }
    ps.push(format!(
        "--format={{{{.ID}}}} {{{{.Label \"{LABEL_PREFIX}.step\"}}}} {{{{.Names}}}}"
    ));
    let listed = process::query(&ps)?;
    if !listed.success() {
        // Not knowing is no reason to stop: the steps run as before.
        return Ok(());
    }
    for line in listed.stdout.lines() {
        let mut fields = line.splitn(3, ' ');
        let (Some(id), Some(step), name) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if !steps.contains(&step) {
            continue;
        }
        eprintln!(
            "host_container: removing container {} left running by an interrupted run of `{step}`",
            name.unwrap_or(id)
        );
        let mut remove = head.clone();
        remove.extend(["rm".into(), "--force".into(), id.to_owned()]);
        let removed = process::capture(&remove)?;
        if !removed.success() {
            return Err(Error::new(
                Kind::Conflict,
                format!(
                    "container {} of an interrupted run of `{step}` could not be removed",
                    name.unwrap_or(id)
                ),
            )
            .note(removed.stderr.trim().to_owned())
            .into());
        }
    }
    Ok(())
}
