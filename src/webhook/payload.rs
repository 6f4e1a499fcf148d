//! The parts of GitHub webhook payloads we read. Every field is optional in the types because
//! real payloads omit fields their schema calls required; `JobDelivery::from_payload` decides
//! what is truly needed.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::demand::{JobEvent, JobStatus, RepoRef};

/// The event named by `X-GitHub-Event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    WorkflowJob,
    Ping,
    Other,
}

impl EventKind {
    pub fn parse(header: &str) -> Self {
        match header {
            "workflow_job" => Self::WorkflowJob,
            "ping" => Self::Ping,
            _ => Self::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::WorkflowJob => "workflow_job",
            Self::Ping => "ping",
            Self::Other => "other",
        }
    }
}

#[derive(Debug, Default)]
pub struct Payload {
    pub action: Option<String>,
    pub workflow_job: Option<WorkflowJob>,
    pub repository: Option<Repository>,
}

#[derive(Debug, Default)]
pub struct WorkflowJob {
    pub id: Option<u64>,
    pub run_id: Option<u64>,
    pub run_attempt: Option<u32>,
    pub status: Option<String>,
    pub labels: Option<Vec<String>>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    /// The group of the runner that took the job; `null` while queued.
    pub runner_group_name: Option<String>,
}

#[derive(Debug, Default)]
pub struct Repository {
    pub id: Option<u64>,
    pub full_name: Option<String>,
}

/// A JSON object key as bytes. serde_json hands a key over this way without its own UTF-8 check,
/// which costs more than matching the key (a repository object has some 80 of them); `checked`
/// makes the same checks in one pass over the (almost always ASCII) bytes, so a malformed key is
/// still refused. A key written with escapes arrives unescaped, owned.
struct Key<'de>(Cow<'de, [u8]>);

impl Key<'_> {
    /// What serde_json checks of a key read as text: UTF-8, and no raw control characters. A key
    /// with escapes arrives unescaped, raw control characters and all, so an escaped control
    /// character (`"\u0001"`, valid JSON) cannot be told from a raw one (not JSON): both are
    /// refused. GitHub's keys hold none; keys inside the values we skip are serde_json's to check.
    fn checked<E: serde::de::Error>(bytes: &[u8]) -> Result<(), E> {
        if bytes.iter().all(|b| (0x20..0x80).contains(b)) {
            return Ok(());
        }
        if bytes.iter().any(|b| *b < 0x20) {
            return Err(E::custom("control character (\\u0000-\\u001F) found in an object key"));
        }
        std::str::from_utf8(bytes).map(|_| ()).map_err(|_| E::custom("object key is not valid UTF-8"))
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Key<'de>, E> {
                Key::checked(v)?;
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Key<'de>, E> {
                Key::checked(v)?;
                Ok(Key(Cow::Owned(v.to_vec())))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v.as_bytes())))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.as_bytes().to_vec())))
            }
        }
        deserializer.deserialize_bytes(KeyVisitor)
    }
}

/// `Deserialize` for a struct of `Option` fields read from a JSON object: the named keys fill
/// their fields (the last wins if a key repeats), every other key's value is skipped unread.
/// What serde's derive does, with the cheaper keys above.
macro_rules! object_fields {
    ($ty:ident { $($field:ident),+ $(,)? }) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct ObjectVisitor;
                impl<'de> Visitor<'de> for ObjectVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a ", stringify!($ty), " object"))
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$ty, A::Error> {
                        let mut object = $ty::default();
                        while let Some(Key(key)) = map.next_key()? {
                            $(
                                if *key == *stringify!($field).as_bytes() {
                                    object.$field = map.next_value()?;
                                    continue;
                                }
                            )+
                            map.next_value::<IgnoredAny>()?;
                        }
                        Ok(object)
                    }
                }
                deserializer.deserialize_map(ObjectVisitor)
            }
        }
    };
}

object_fields!(Payload { action, workflow_job, repository });
object_fields!(WorkflowJob { id, run_id, run_attempt, status, labels, created_at, started_at, runner_group_name });
object_fields!(Repository { id, full_name });

impl Payload {
    /// The lower-cased `owner/name` the payload names, if any.
    pub fn repository_name(&self) -> Option<String> {
        self.repository.as_ref()?.full_name.as_deref().map(str::to_ascii_lowercase)
    }
}

/// The lower-cased `repository.full_name` of a JSON document, read only as far as the top-level
/// `repository` object: what decides which secrets may have signed the document, found before
/// the signature is checked without parsing (or paying for) the rest of it. The first
/// `repository` key counts; a document that names another one later is refused once parsed
/// whole (see the webhook handler), so the two readings can never disagree on a verified body.
pub fn locate_repository(document: &[u8]) -> Option<String> {
    let mut found = None;
    let mut deserializer = serde_json::Deserializer::from_slice(document);
    // The seek ends with an error as soon as it has the repository, leaving the rest unread;
    // `found` holds what was read either way.
    let _ = serde::de::DeserializeSeed::deserialize(RepositorySeek(&mut found), &mut deserializer);
    found.and_then(|repository| repository.full_name).map(|name| name.to_ascii_lowercase())
}

struct RepositorySeek<'a>(&'a mut Option<Repository>);

impl<'de> serde::de::DeserializeSeed<'de> for RepositorySeek<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RepositorySeek<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a webhook payload object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            if *key == *b"repository" {
                *self.0 = map.next_value()?;
                return Err(serde::de::Error::custom("repository found; the rest is not read"));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// Why a verified `workflow_job` payload cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("workflow_job payload has no workflow_job object")]
    MissingJob,
    #[error("workflow_job payload has no workflow_job.id")]
    MissingJobId,
    #[error("workflow_job payload has no repository.id and full_name")]
    MissingRepository,
}

/// What a `workflow_job` delivery says, or that its action is one we do not track.
#[derive(Debug, Clone, PartialEq)]
pub enum JobDelivery {
    Event(JobEvent),
    UnknownAction,
}

impl JobDelivery {
    pub fn from_payload(payload: &Payload) -> Result<Self, PayloadError> {
        let job = payload.workflow_job.as_ref().ok_or(PayloadError::MissingJob)?;
        let job_id = job.id.ok_or(PayloadError::MissingJobId)?;
        let repository = payload.repository.as_ref().ok_or(PayloadError::MissingRepository)?;
        let (Some(repo_id), Some(full_name)) = (repository.id, repository.full_name.as_deref()) else {
            return Err(PayloadError::MissingRepository);
        };
        // Real payloads are not always consistent (action `queued` with status `waiting`): the
        // furthest state either names wins, so a job is never held back by a stale field.
        let from_action = payload.action.as_deref().and_then(JobStatus::parse);
        let from_status = job.status.as_deref().and_then(JobStatus::parse);
        let Some(status) = from_action.max(from_status) else {
            return Ok(Self::UnknownAction);
        };
        let since = match status {
            JobStatus::InProgress | JobStatus::Completed => job.started_at.as_deref().or(job.created_at.as_deref()),
            JobStatus::Waiting | JobStatus::Queued => job.created_at.as_deref(),
        }
        .and_then(parse_timestamp);
        let event = JobEvent::new(
            job_id,
            job.run_id.unwrap_or(0),
            job.run_attempt.unwrap_or(1),
            RepoRef::new(repo_id, full_name),
            status,
            job.labels.iter().flatten(),
        );
        // A label that looks like the group mark is not GitHub's: it goes.
        Ok(Self::Event(event.ran_in_group(job.runner_group_name.as_deref()).since(since)))
    }
}

/// Unix seconds of an RFC 3339 timestamp; `None` when it does not parse.
fn parse_timestamp(text: &str) -> Option<i64> {
    text.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

/// The metric label for an action: only known values, so payloads cannot explode cardinality.
pub fn action_label(action: Option<&str>) -> &'static str {
    match action {
        None => "none",
        Some(text) => JobStatus::parse(text).map_or("other", JobStatus::as_str),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demand::job::group_label;

    fn parse(json: &str) -> Result<JobDelivery, PayloadError> {
        JobDelivery::from_payload(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn the_group_of_the_runner_that_took_a_job_is_recorded_once_it_runs() {
        let body = |action: &str, group: &str| {
            format!(
                r#"{{"action":"{action}","workflow_job":{{"id":5,"run_id":6,"status":"{action}","labels":["Linux"],
                "runner_group_name":{group}}},"repository":{{"id":9,"full_name":"acme/api"}}}}"#
            )
        };
        let labels = |action: &str, group: &str| match parse(&body(action, group)) {
            Ok(JobDelivery::Event(event)) => event.labels,
            other => panic!("{other:?}"),
        };
        assert_eq!(labels("in_progress", r#""Large Runners""#), ["linux".to_string(), group_label("large runners")]);
        assert_eq!(labels("completed", r#""Default""#), ["linux".to_string(), group_label("default")]);
        assert_eq!(labels("queued", "null"), ["linux"]);
        assert_eq!(labels("in_progress", "null"), ["linux"], "no runner group named");
        // A label that looks like the mark is not GitHub's: it is dropped, and cannot name a group.
        let forged = body("queued", "null").replace(r#"["Linux"]"#, r#"["Linux","\u007fgroup:large"]"#);
        match parse(&forged) {
            Ok(JobDelivery::Event(event)) => assert_eq!(event.labels, ["linux"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_queued_job_becomes_a_queued_event() {
        let d = parse(
            r#"{"action":"queued","workflow_job":{"id":5,"run_id":2,"run_attempt":3,"status":"queued",
            "labels":["self-hosted","Linux"],"created_at":"2026-01-01T00:00:10Z"},"repository":{"id":9,"full_name":"Acme/API"}}"#,
        );
        let JobDelivery::Event(e) = d.unwrap() else { panic!("expected an event") };
        assert_eq!((e.job_id, e.run_id, e.run_attempt, e.status), (5, 2, 3, JobStatus::Queued));
        assert_eq!(e.repo, RepoRef::new(9, "acme/api"));
        assert_eq!(e.labels, vec!["linux", "self-hosted"]);
        assert_eq!(e.since, Some(1_767_225_610));
    }

    #[test]
    fn the_furthest_of_action_and_status_wins() {
        let d = parse(
            r#"{"action":"queued","workflow_job":{"id":5,"status":"waiting"},"repository":{"id":9,"full_name":"a/b"}}"#,
        );
        assert!(matches!(d, Ok(JobDelivery::Event(JobEvent { status: JobStatus::Queued, .. }))));
    }

    #[test]
    fn unknown_actions_are_reported_as_such() {
        let d = parse(
            r#"{"action":"requeued_by_magic","workflow_job":{"id":5,"status":"weird"},"repository":{"id":9,"full_name":"a/b"}}"#,
        );
        assert_eq!(d, Ok(JobDelivery::UnknownAction));
    }

    #[test]
    fn keys_are_matched_unescaped_and_unknown_keys_are_skipped_whatever_they_hold() {
        let d = parse(
            r#"{"action":"queued","sender":{"login":"x","id":[1,{"a":null}]},
            "workflow_job":{"node_id":"J","id":7,"steps":[{"name":"a\"b"}],"st\u0061tus":"in_progress",
            "started_at":"2026-01-01T00:00:20Z","labels":[]},"repository":{"id":3,"full\u005fname":"o/r","owner":{"id":4}}}"#,
        );
        let JobDelivery::Event(e) = d.unwrap() else { panic!("expected an event") };
        assert_eq!((e.job_id, e.status, e.since), (7, JobStatus::InProgress, Some(1_767_225_620)));
        assert_eq!(e.repo, RepoRef::new(3, "o/r"), "the owner's id must not be taken for the repository's");
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_and_a_field_of_the_wrong_shape_is_an_error() {
        let p: Payload = serde_json::from_str(r#"{"action":"queued","action":"completed"}"#).unwrap();
        assert_eq!(p.action.as_deref(), Some("completed"));
        assert!(serde_json::from_str::<Payload>(r#"{"repository":["o/r",1]}"#).is_err());
        assert!(serde_json::from_str::<Payload>(r#"{"workflow_job":{"id":"seven"}}"#).is_err());
        assert!(serde_json::from_str::<Payload>(r#"{"workflow_job":{"id":7,}}"#).is_err());
        let p: Payload = serde_json::from_str(r#"{"workflow_job":{"id":null,"labels":null}}"#).unwrap();
        assert!(p.workflow_job.is_some_and(|j| j.id.is_none() && j.labels.is_none()));
    }

    #[test]
    fn a_key_that_is_not_valid_json_text_is_refused_as_before() {
        let refused: [&[u8]; 4] = [
            b"{\"ac\x01tion\":\"queued\"}",
            // Valid JSON, but unescaped it is the key above: see `Key::checked`.
            b"{\"ac\\u0001tion\":\"queued\"}",
            b"{\"repository\":{\"n\xffame\":1}}",
            b"{\"workflow_job\":{\"\\ud800\":1}}",
        ];
        for doc in refused {
            assert!(serde_json::from_slice::<Payload>(doc).is_err(), "{}", doc.escape_ascii());
        }
        let accepted: [&[u8]; 2] = [
            "{\"r\u{e9}sum\u{e9}\":1,\"action\":\"queued\"}".as_bytes(),
            b"{\"r\\u00e9sum\\u00e9\":1,\"action\":\"queued\"}",
        ];
        for doc in accepted {
            let payload = serde_json::from_slice::<Payload>(doc).unwrap();
            assert_eq!(payload.action.as_deref(), Some("queued"));
        }
    }

    #[test]
    fn a_raw_control_character_is_refused_in_a_key_that_also_has_an_escape() {
        let refused: [&[u8]; 3] = [
            b"{\"ac\\u0074\x01ion\":\"queued\"}",
            b"{\"workflow_job\":{\"\\u0069d\n\":1}}",
            b"{\"repository\":{\"ful\\u006c\x00name\":\"a/b\"}}",
        ];
        for doc in refused {
            assert!(serde_json::from_slice::<serde_json::Value>(doc).is_err(), "not JSON");
            assert!(serde_json::from_slice::<Payload>(doc).is_err(), "{}", doc.escape_ascii());
        }
        assert_eq!(locate_repository(b"{\"repository\":{\"\\u0061\x01\":1,\"full_name\":\"a/b\"}}"), None);
    }

    #[test]
    fn the_repository_is_located_without_reading_the_document_past_it() {
        let document = br#"{"action":"queued","workflow_job":{"id":1,"steps":[{"name":"a"}],"labels":["x"]},
            "repository":{"id":9,"owner":{"full_name":"not/this"},"full\u005fname":"Acme/API"},"sender":"#;
        assert_eq!(locate_repository(document).as_deref(), Some("acme/api"), "the document is cut after it");
        let twice = br#"{"repository":{"full_name":"acme/web"},"repository":{"full_name":"acme/api"}}"#;
        assert_eq!(locate_repository(twice).as_deref(), Some("acme/web"), "the first one counts");
        assert_eq!(locate_repository(br#"{"action":"queued","sender":{}}"#), None);
        assert_eq!(locate_repository(br#"{"repository":{"full_name":7}}"#), None);
        assert_eq!(locate_repository(b"[1,2]"), None);
        assert_eq!(locate_repository(b"{not json"), None);
    }

    #[test]
    fn missing_job_id_or_repository_is_an_error() {
        assert_eq!(
            parse(r#"{"action":"queued","workflow_job":{},"repository":{"id":1,"full_name":"a/b"}}"#),
            Err(PayloadError::MissingJobId)
        );
        assert_eq!(parse(r#"{"action":"queued","workflow_job":{"id":1}}"#), Err(PayloadError::MissingRepository));
        assert_eq!(
            parse(r#"{"action":"queued","repository":{"id":1,"full_name":"a/b"}}"#),
            Err(PayloadError::MissingJob)
        );
    }
}
