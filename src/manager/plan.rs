//! Pure planning: the desired instance set and what was observed on the host → the steps that
//! converge the host to the set, in the order that keeps an interrupted run safe to repeat.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::set::{InstanceSet, PROFILES_DIR, profile_in_dropin};

/// What the host looks like, as far as the plan cares.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Instances that carry the manager's drop-in, with its current content.
    pub owned: BTreeMap<String, String>,
    /// Instances the system configuration owns (a unit file or a drop-in under /etc, as NixOS
    /// writes for `services.hail.<name>`): the manager never configures, stops or removes them.
    pub foreign: BTreeSet<String>,
    /// Running instances, with the configuration id their main process was started with
    /// (`None`: started without one, e.g. from the boot-time configuration).
    pub running: BTreeMap<String, Option<String>>,
    /// The hail instance whose activation runs this apply (the manager itself), if any.
    pub caller: Option<String>,
}

/// One step of an apply; each is idempotent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The set declares an instance the system configuration owns: leave it, say so.
    SkipForeign(String),
    /// The system configuration now owns an instance that has the manager's drop-in: delete
    /// that file only, so the two configurations do not mix (the unit is not stopped).
    Disown(String),
    /// Gone from the set: stop it, run its profile's `bin/deactivate`, delete the profile if it
    /// is the instance's own under the profiles directory, then delete its drop-in (last, so an
    /// interrupted removal is found and finished next time).
    Remove { name: String, profile: PathBuf },
    /// The caller is not in the set: it is left running as it is (it cannot remove itself).
    KeepCaller(String),
    /// Write (create or replace) an instance's drop-in.
    Write { name: String, content: String },
    /// Make systemd read the changed drop-ins.
    DaemonReload,
    /// Start or restart these instances and wait until each is active.
    Restart(Vec<String>),
    /// Restart the caller, last and without waiting: its stop waits for its running activation,
    /// which is waiting for this apply.
    RestartCallerNoBlock(String),
}

/// The steps converging `observed` to `desired`.
pub fn plan(desired: &InstanceSet, observed: &Observed) -> Vec<Step> {
    let mut steps = Vec::new();
    let caller = observed.caller.as_deref();

    for name in desired.instances.keys() {
        if observed.foreign.contains(name) {
            steps.push(Step::SkipForeign(name.clone()));
        }
    }
    for name in observed.owned.keys() {
        if observed.foreign.contains(name) {
            steps.push(Step::Disown(name.clone()));
        }
    }
    // Removals first: a renamed service must release what it holds (ports, files) before its
    // successor starts.
    for (name, dropin) in &observed.owned {
        if desired.instances.contains_key(name) || observed.foreign.contains(name) {
            continue;
        }
        if Some(name.as_str()) == caller {
            steps.push(Step::KeepCaller(name.clone()));
        } else {
            let profile =
                profile_in_dropin(dropin).unwrap_or_else(|| Path::new(PROFILES_DIR).join(name));
            steps.push(Step::Remove {
                name: name.clone(),
                profile,
            });
        }
    }

    let mut restart = Vec::new();
    let mut restart_caller = None;
    for (name, instance) in &desired.instances {
        if observed.foreign.contains(name) {
            continue;
        }
        if observed.owned.get(name) != Some(&instance.dropin) {
            steps.push(Step::Write {
                name: name.clone(),
                content: instance.dropin.clone(),
            });
        }
        // Up to date only when running with exactly this configuration: a drop-in written by
        // an interrupted apply, or a stopped or crashed instance, still gets its (re)start.
        let up_to_date = observed.running.get(name) == Some(&Some(instance.config_id.clone()));
        if !up_to_date {
            if Some(name.as_str()) == caller {
                restart_caller = Some(name.clone());
            } else {
                restart.push(name.clone());
            }
        }
    }

    // Also before every (re)start: drop-ins written by an interrupted apply may not have been
    // read yet, and a restart would otherwise start the old configuration.
    let changed = steps.iter().any(|s| {
        matches!(
            s,
            Step::Write { .. } | Step::Disown(_) | Step::Remove { .. }
        )
    });
    let reload = changed || !restart.is_empty() || restart_caller.is_some();
    if reload {
        steps.push(Step::DaemonReload);
    }
    if !restart.is_empty() {
        steps.push(Step::Restart(restart));
    }
    if let Some(name) = restart_caller {
        steps.push(Step::RestartCallerNoBlock(name));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::set::InstanceSet;

    fn desired(names: &[(&str, &str)]) -> InstanceSet {
        let entries: Vec<String> = names
            .iter()
            .map(|(n, period)| {
                format!(
                    r#""{n}": {{"environment": {{"HAIL_JOB_URI": "http://h/job/p/j/{n}", "HAIL_POLL_PERIOD": "{period}"}}}}"#
                )
            })
            .collect();
        let json = format!(
            r#"{{"version": 1, "instances": {{{}}}}}"#,
            entries.join(",")
        );
        InstanceSet::parse(&json, Path::new("instances.json")).unwrap()
    }

    /// The host after a complete apply of `set`, every instance running.
    fn applied(set: &InstanceSet) -> Observed {
        Observed {
            owned: set
                .instances
                .values()
                .map(|i| (i.name.clone(), i.dropin.clone()))
                .collect(),
            running: set
                .instances
                .values()
                .map(|i| (i.name.clone(), Some(i.config_id.clone())))
                .collect(),
            ..Observed::default()
        }
    }

    fn remove(name: &str) -> Step {
        Step::Remove {
            name: name.into(),
            profile: Path::new(PROFILES_DIR).join(name),
        }
    }

    fn writes(steps: &[Step]) -> Vec<&str> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Write { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn first_apply_writes_reloads_and_starts_everything() {
        let set = desired(&[("a", "1m"), ("b", "1m")]);
        let steps = plan(&set, &Observed::default());
        assert_eq!(writes(&steps), ["a", "b"]);
        assert_eq!(
            steps[2..],
            [
                Step::DaemonReload,
                Step::Restart(vec!["a".into(), "b".into()])
            ]
        );
    }

    #[test]
    fn converged_host_needs_nothing() {
        let set = desired(&[("a", "1m"), ("b", "1m")]);
        assert_eq!(plan(&set, &applied(&set)), []);
    }

    #[test]
    fn add_change_remove() {
        let old = desired(&[("a", "1m"), ("b", "1m")]);
        let new = desired(&[("a", "1m"), ("b", "2m"), ("c", "1m")]);
        let steps = plan(&new, &applied(&old));
        // a unchanged, b changed, c new.
        assert_eq!(writes(&steps), ["b", "c"]);
        assert_eq!(
            steps.last(),
            Some(&Step::Restart(vec!["b".into(), "c".into()]))
        );

        let newer = desired(&[("b", "2m"), ("c", "1m")]);
        let steps = plan(&newer, &applied(&new));
        assert_eq!(steps, [remove("a"), Step::DaemonReload]);
    }

    #[test]
    fn a_removal_names_the_profile_its_dropin_recorded() {
        let json = r#"{"version": 1, "instances": {"a": {"environment": {"HAIL_JOB_URI": "http://h/j",
            "HAIL_PROFILE": "/srv/profiles/a"}}}}"#;
        let old = InstanceSet::parse(json, Path::new("instances.json")).unwrap();
        let mut observed = applied(&old);
        observed
            .owned
            .insert("b".into(), "# a drop-in from elsewhere\n".into());
        let steps = plan(&desired(&[]), &observed);
        assert_eq!(
            steps,
            [
                Step::Remove {
                    name: "a".into(),
                    profile: PathBuf::from("/srv/profiles/a")
                },
                remove("b"),
                Step::DaemonReload,
            ]
        );
    }

    #[test]
    fn removals_come_before_starts() {
        let old = desired(&[("a", "1m")]);
        let new = desired(&[("b", "1m")]);
        let steps = plan(&new, &applied(&old));
        assert_eq!(steps[0], remove("a"));
        assert_eq!(steps.last(), Some(&Step::Restart(vec!["b".into()])));
    }

    #[test]
    fn an_interrupted_apply_is_finished() {
        // The drop-in was written, but the instance still runs the old configuration.
        let old = desired(&[("a", "1m")]);
        let new = desired(&[("a", "2m")]);
        let mut observed = applied(&new);
        observed.running = applied(&old).running;
        assert_eq!(
            plan(&new, &observed),
            [Step::DaemonReload, Step::Restart(vec!["a".into()])]
        );
    }

    #[test]
    fn stopped_or_crashed_instances_are_started() {
        let set = desired(&[("a", "1m"), ("b", "1m")]);
        let mut observed = applied(&set);
        observed.running.remove("b");
        assert_eq!(
            plan(&set, &observed),
            [Step::DaemonReload, Step::Restart(vec!["b".into()])]
        );
    }

    #[test]
    fn the_caller_restarts_last_without_blocking() {
        let old = desired(&[("manager", "1m"), ("a", "1m")]);
        let new = desired(&[("manager", "2m"), ("a", "2m")]);
        let mut observed = applied(&old);
        observed.caller = Some("manager".into());
        let steps = plan(&new, &observed);
        assert_eq!(
            steps[2..],
            [
                Step::DaemonReload,
                Step::Restart(vec!["a".into()]),
                Step::RestartCallerNoBlock("manager".into()),
            ]
        );
    }

    #[test]
    fn the_caller_started_from_its_boot_configuration_is_restarted_once() {
        // After a reboot the runtime drop-ins are gone and the manager runs from /etc/hail.
        let set = desired(&[("manager", "1m")]);
        let mut observed = Observed {
            caller: Some("manager".into()),
            ..Observed::default()
        };
        observed.running.insert("manager".into(), None);
        let steps = plan(&set, &observed);
        assert_eq!(writes(&steps), ["manager"]);
        assert_eq!(
            steps.last(),
            Some(&Step::RestartCallerNoBlock("manager".into()))
        );
        // Its restarted self finds everything in place.
        let mut after = applied(&set);
        after.caller = Some("manager".into());
        assert_eq!(plan(&set, &after), []);
    }

    #[test]
    fn the_caller_never_removes_itself() {
        let old = desired(&[("manager", "1m"), ("a", "1m")]);
        let new = desired(&[("a", "1m")]);
        let mut observed = applied(&old);
        observed.caller = Some("manager".into());
        assert_eq!(plan(&new, &observed), [Step::KeepCaller("manager".into())]);
    }

    #[test]
    fn system_owned_instances_are_left_alone() {
        let set = desired(&[("nixos", "1m"), ("a", "1m")]);
        let mut observed = applied(&desired(&[("a", "1m")]));
        observed.foreign.insert("nixos".into());
        observed.running.insert("nixos".into(), None);
        assert_eq!(plan(&set, &observed), [Step::SkipForeign("nixos".into())]);
    }

    #[test]
    fn an_instance_taken_over_by_the_system_loses_only_the_managers_dropin() {
        let set = desired(&[("a", "1m")]);
        let mut observed = applied(&set);
        observed.foreign.insert("a".into());
        assert_eq!(
            plan(&set, &observed),
            [
                Step::SkipForeign("a".into()),
                Step::Disown("a".into()),
                Step::DaemonReload
            ]
        );
        // Same when the set no longer declares it: no stop, no deactivate.
        let empty = desired(&[]);
        assert_eq!(
            plan(&empty, &observed),
            [Step::Disown("a".into()), Step::DaemonReload]
        );
    }
}
