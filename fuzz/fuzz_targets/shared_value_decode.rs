//! The value replicas share through memcached (`GAR1`/`GAR2`), read from arbitrary bytes: a
//! cache anyone on its network can write to. What decodes must encode to a value that decodes
//! to the same jobs, and encoding is canonical from then on.
#![no_main]

use gaa::demand::repo_jobs::RepoJobs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(value) = RepoJobs::decode(bytes) else {
        return;
    };
    let encoded = value.encode();
    assert_eq!(RepoJobs::decode(&encoded).as_ref(), Ok(&value));
    assert_eq!(RepoJobs::decode(&encoded).map(|again| again.encode()), Ok(encoded.clone()), "encoding is canonical");
    if bytes.starts_with(b"GAR1") {
        assert!(encoded.starts_with(b"GAR1"), "what was read in the compact format is written in it");
        assert!(encoded.len() <= bytes.len(), "each label set is written once, and only if a job uses it");
    }
});
