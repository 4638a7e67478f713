//! The journal message catalog `systemd/hail.catalog` against what hail logs: one entry for
//! every `MESSAGE_ID` in the sources and none for an id hail does not log, each with the headers
//! and text `journalctl -x` shows, substituting only fields its entries carry. (That journalctl
//! itself reads it, and shows it for a real event: `tests/system.rs`.)

use std::collections::{BTreeMap, BTreeSet};

use hail_testkit::catalog;

#[test]
fn every_message_id_hail_logs_has_one_entry_and_no_other_has_any() {
    let entries = catalog::entries();
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &entries {
        *count.entry(e.id.as_str()).or_default() += 1;
    }
    let constants = catalog::message_ids();
    let logged: BTreeSet<String> = constants.values().cloned().collect();
    for (name, id) in &constants {
        assert_eq!(
            count.get(id.as_str()).copied().unwrap_or(0),
            1,
            "{name} ({id}) needs exactly one entry in systemd/hail.catalog"
        );
    }
    // An id written anywhere else in the sources is one hail logs too.
    for (id, file) in catalog::ids_in_sources() {
        assert!(
            logged.contains(&id),
            "{id} in {} is not a MSG_ constant of src/agent/report.rs",
            file.display()
        );
    }
    for e in &entries {
        assert!(
            logged.contains(&e.id),
            "line {}: hail logs no MESSAGE_ID {}",
            e.line,
            e.id
        );
    }
}

#[test]
fn every_entry_has_a_subject_its_origin_and_a_text() {
    for e in catalog::entries() {
        let at = format!("systemd/hail.catalog, line {} ({})", e.line, e.id);
        assert!(
            e.headers
                .get("Subject")
                .is_some_and(|s| !s.trim().is_empty()),
            "{at}: no Subject"
        );
        assert_eq!(
            e.headers.get("Defined-By").map(String::as_str),
            Some("hail"),
            "{at}"
        );
        assert!(e.headers.contains_key("Support"), "{at}: no Support");
        assert!(!e.body.trim().is_empty(), "{at}: no text");
        // journalctl -x prefixes each line with "-- "; a line of the text that starts so would
        // read as the start of an entry.
        assert!(
            !e.body.lines().any(|l| l.starts_with("-- ")),
            "{at}: a line of the text starts with \"-- \""
        );
    }
}

/// journalctl replaces an `@FIELD@` the entry lacks by the field's name: the text would read
/// "build HAIL_BUILD_ID". Only fields every event with that id carries are used (and the two
/// every entry of an agent carries).
#[test]
fn substitutions_name_fields_every_such_entry_carries() {
    let always: BTreeSet<String> = ["HAIL_JOB", "HAIL_PROFILE"].map(String::from).into();
    let constants = catalog::message_ids();
    let fields = catalog::fields_of_every_entry();
    for e in catalog::entries() {
        let Some((name, _)) = constants.iter().find(|(_, id)| **id == e.id) else {
            continue; // reported by the test above
        };
        let carried = fields
            .get(name)
            .unwrap_or_else(|| panic!("{name} is never logged"));
        for f in e.fields() {
            assert!(
                always.contains(&f) || carried.contains(&f),
                "systemd/hail.catalog, line {}: {name}'s entries do not all carry {f} \
                 (they carry {carried:?})",
                e.line
            );
        }
    }
}
