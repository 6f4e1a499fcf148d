//! The webhook payload reader: the repository located before the signature is checked, the
//! payload parsed after it, and the job event made from that. The payload types read JSON keys
//! with their own visitor, so every document is also read through `serde_json::Value`, the
//! reference: where both read it, they must read the same fields.
#![no_main]

use gaa::demand::JobStatus;
use gaa::demand::job::{GROUP_MARK, group_label, normalize_labels};
use gaa::webhook::payload::{JobDelivery, Payload, action_label, locate_repository};
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde_json::Value;

type JobFields = (
    Option<u64>,
    Option<u64>,
    Option<u32>,
    Option<String>,
    Option<Vec<String>>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Everything a `Payload` holds, comparable.
#[derive(Debug, PartialEq)]
struct Fields {
    action: Option<String>,
    job: Option<JobFields>,
    repository: Option<(Option<u64>, Option<String>)>,
}

fn fields(payload: &Payload) -> Fields {
    Fields {
        action: payload.action.clone(),
        job: payload.workflow_job.as_ref().map(|j| {
            (
                j.id,
                j.run_id,
                j.run_attempt,
                j.status.clone(),
                j.labels.clone(),
                j.created_at.clone(),
                j.started_at.clone(),
                j.runner_group_name.clone(),
            )
        }),
        repository: payload.repository.as_ref().map(|r| (r.id, r.full_name.clone())),
    }
}

/// A field of `object` as `Option<T>` reads it: absent and `null` are `None`; `Err` when the
/// value has another type than `read` takes.
fn field<T>(object: &Value, key: &str, read: impl Fn(&Value) -> Option<T>) -> Result<Option<T>, ()> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => read(value).map(Some).ok_or(()),
    }
}

fn string(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

/// Whether a key of `object` holds a control character (U+0000 to U+001F). The payload types
/// refuse those in the objects they read: an escaped one cannot be told from a raw one once
/// serde_json has unescaped it.
fn control_character_in_a_key(object: &Value) -> bool {
    object.as_object().is_some_and(|map| map.keys().any(|key| key.bytes().any(|b| b < 0x20)))
}

/// What the payload types should read from a document, from its `Value`; `Err` when a field
/// has the wrong type, so the payload types must refuse the document.
fn expected(document: &Value) -> Result<Fields, ()> {
    if !document.is_object() {
        return Err(());
    }
    let read_objects = [Some(document), document.get("workflow_job"), document.get("repository")];
    if read_objects.into_iter().flatten().any(control_character_in_a_key) {
        return Err(());
    }
    let job = field(document, "workflow_job", |job| {
        job.is_object().then_some(())?;
        let labels = |value: &Value| value.as_array()?.iter().map(string).collect::<Option<Vec<String>>>();
        Some((
            field(job, "id", Value::as_u64).ok()?,
            field(job, "run_id", Value::as_u64).ok()?,
            field(job, "run_attempt", |v| v.as_u64().and_then(|n| u32::try_from(n).ok())).ok()?,
            field(job, "status", string).ok()?,
            field(job, "labels", labels).ok()?,
            field(job, "created_at", string).ok()?,
            field(job, "started_at", string).ok()?,
            field(job, "runner_group_name", string).ok()?,
        ))
    })?;
    let repository = field(document, "repository", |repository| {
        repository.is_object().then_some(())?;
        Some((field(repository, "id", Value::as_u64).ok()?, field(repository, "full_name", string).ok()?))
    })?;
    Ok(Fields { action: field(document, "action", string)?, job, repository })
}

/// What the handler does with a verified, parsed payload, with the event's invariants.
fn check_delivery(payload: &Payload) {
    let _ = action_label(payload.action.as_deref());
    let Ok(JobDelivery::Event(event)) = JobDelivery::from_payload(payload) else {
        return;
    };
    let job = payload.workflow_job.as_ref().expect("an event has a job");
    assert_eq!(Some(event.job_id), job.id);
    let from_action = payload.action.as_deref().and_then(JobStatus::parse);
    let from_status = job.status.as_deref().and_then(JobStatus::parse);
    assert_eq!(Some(event.status), from_action.max(from_status), "the furthest state named wins");
    assert_eq!(event.repo.full_name, payload.repository_name().expect("an event has a repository"));
    // The job's labels, less any that look like the group mark, and the group of the runner that
    // took it once it runs.
    let mut labels = normalize_labels(job.labels.iter().flatten());
    labels.retain(|label| !label.starts_with(GROUP_MARK));
    let group = job.runner_group_name.as_deref().map(str::trim).filter(|group| !group.is_empty());
    if let (Some(group), JobStatus::InProgress | JobStatus::Completed) = (group, event.status) {
        labels.push(group_label(group));
        labels.sort_unstable();
    }
    assert_eq!(event.labels, labels);
    assert!(event.labels.windows(2).all(|pair| pair[0] < pair[1]), "labels sorted and unique: {:?}", event.labels);
}

fuzz_target!(|document: &[u8]| {
    let located = locate_repository(document);
    assert!(located.as_deref().is_none_or(|name| !name.bytes().any(|b| b.is_ascii_uppercase())));
    let parsed = serde_json::from_slice::<Payload>(document);
    if let Ok(payload) = &parsed {
        assert!(
            serde_json::from_slice::<IgnoredAny>(document).is_ok(),
            "the payload types accepted a document that is not JSON"
        );
        check_delivery(payload);
    }
    let Ok(value) = serde_json::from_slice::<Value>(document) else {
        return;
    };
    let expected = expected(&value);
    if let Ok(payload) = &parsed {
        assert_eq!(Ok(fields(payload)), expected, "the payload types and serde_json read different fields");
    }
    // The same document with each key once: both readings must agree on whether it is usable,
    // and the repository located up front is the one the whole document names.
    let canonical = serde_json::to_vec(&value).expect("a Value serializes");
    let reread = serde_json::from_slice::<Payload>(&canonical);
    assert_eq!(
        reread.as_ref().map(fields).map_err(|_| ()),
        expected,
        "reading {}",
        String::from_utf8_lossy(&canonical)
    );
    if let Ok(payload) = &reread {
        assert_eq!(locate_repository(&canonical), payload.repository_name());
        check_delivery(payload);
    }
});
