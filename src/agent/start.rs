//! Start-up: the configuration checked, the profile and the state taken, this host's rollout
//! slot, the start-up activation, READY.

use std::time::Duration;

use jiff::Timestamp;
use tracing::{error, info, warn};

use super::books::Books;
use super::signals::listen_for_signals;
use super::{Agent, AgentError, Through, report};
use crate::cli::Config;
use crate::decide::{self, Policy};
use crate::deploy;
use crate::hydra::HydraClient;
use crate::netrc::Netrc;
use crate::profile::Profile;
use crate::record::DeploymentResult;
use crate::state::{Activity, AfterReboot, DeployFailure, Event, State};
use crate::store_path::StorePath;
use crate::system;
use crate::systemd::{self, Watchdog};
use crate::types::{Build, ProfileState};

impl Agent {
    /// Checks the configuration, takes the profile and the state, runs the start-up activation,
    /// says READY.
    pub(super) async fn start(config: Config) -> Result<Agent, AgentError> {
        let credentials = match &config.netrc_file {
            Some(path) => {
                let (netrc, warnings) = Netrc::load(path)?;
                for w in warnings {
                    warn!(hail.event = "started", "{w}");
                }
                let host = config.job.latest().host_str().unwrap_or_default();
                let credentials = netrc.credentials_for(host);
                if credentials.is_none() && netrc.has_entry_for(host) {
                    warn!(
                        hail.event = "started",
                        "netrc file {}: the entry for {host} has no password; sending no credentials",
                        path.display()
                    );
                }
                credentials
            }
            None => None,
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let hydra = HydraClient::new(&config.job, credentials, config.http_timeout)?;
        let (stop, signals) = listen_for_signals()?;
        let mut profile = Profile::new(config.profile.clone());
        if config
            .system
            .as_ref()
            .is_some_and(|s| !s.action.sets_profile())
        {
            // `--switch-action test` leaves the profile alone: what runs is what is deployed.
            profile = profile.reading_current_from(crate::system::CURRENT_SYSTEM.into());
        }
        let lock = profile.lock()?;
        let dir = config.state_dir.clone();
        dir.create()?;
        let mark = dir.mark_agent()?;
        let now = Timestamp::now();
        let (record, problem) = dir.load(now);
        if let Some(problem) = problem {
            report::state_reset(&problem);
        }
        // A profile that cannot be read (e.g. it points outside the store) is reported, not
        // fatal: the next deployment replaces it.
        let found = profile.state().unwrap_or_else(|e| {
            warn!(hail.event = "started", hail.error = %e, "{e}; treating it as empty");
            ProfileState::default()
        });
        let profile_path = profile.path().display().to_string();
        // A system's switch that failed while its hail was restarted (by the switch, or by the
        // rollback's switch): the profile was switched back, the record still says under way.
        let switch_failed = config.system.as_ref().and_then(|mode| {
            let b = record.deploying.as_ref()?;
            let tracked = system::Tracked::new(b.build_id, dir.path())?;
            let moved =
                found.current.as_ref().map(StorePath::as_str) != Some(b.store_path.as_str());
            if !moved {
                // Still at it: followed once hail runs (see `Agent::after_start`).
                return None;
            }
            let failed = match system::ended(&tracked, mode.action)? {
                system::Followed::Failed(e) => e,
                _ => return None,
            };
            let path = StorePath::parse(&b.store_path).ok()?;
            Some((Build::new(b.build_id, path), failed, tracked))
        });
        let policy = Policy {
            allow_downgrade: config.allow_downgrade,
            min_build_age: config.min_build_age,
            rollout_delay: rollout_delay(&config),
        };
        let state = State::new(
            record,
            policy,
            config.job.display(),
            &profile_path,
            found,
            now,
        );
        info!(
            hail.event = "started",
            "hail {} deploying {} to {}",
            env!("CARGO_PKG_VERSION"),
            config.job.display(),
            profile_path
        );
        let mut agent = Agent {
            hydra,
            profile,
            _lock: lock,
            books: Books {
                state,
                dir,
                _mark: mark,
                metrics_file: config.metrics_file.clone(),
                instance: crate::systemd::instance_name(),
                poll_now: false,
            },
            watchdog: Watchdog::from_env(),
            stop,
            signals,
            config,
            reboot_announced: false,
            unfinished: None,
        };
        if let Some((build, failed, tracked)) = switch_failed {
            let message = format!("{failed} (its unit ended while hail restarted)");
            error!(
                hail.event = "activation-failed",
                message_id = report::MSG_ACTIVATION_FAILED,
                hail.build_id = build.id,
                "{message}"
            );
            let event = Event::Deployed {
                build,
                profile: agent.books.state.profile().clone(),
                result: Err(DeployFailure {
                    result: DeploymentResult::ActivationFailed,
                    reason: format!("activation failed: {failed}"),
                    message,
                }),
            };
            agent.books.state.apply(Timestamp::now(), event);
            agent.books.settle();
            let _ = std::fs::remove_file(&tracked.result);
        }
        agent.books.take_requests();
        agent.books.settle();
        let deployed = agent.books.state.profile().current.is_some();
        // A NixOS system was activated at boot (and a switch that restarted hail goes on).
        let system = agent.config.system.is_some();
        let unfinished = agent.books.state.take_unfinished().and_then(|u| {
            let build = Build::new(
                u.build.build_id,
                StorePath::parse(&u.build.store_path).ok()?,
            );
            let how = match u.verdict {
                Some(verdict) => Through::RollBack(verdict),
                None => Through::Resume,
            };
            Some((build, how))
        });
        match unfinished {
            // Seen through once hail is ready (see `Agent::after_start`): a system's switch may
            // be what restarted hail and may wait for that; a profile's activation, checks and
            // confirmation are a deployment's, not bounded by the start timeout.
            Some(build) => agent.unfinished = Some(build),
            None if agent.config.poll_period.is_some() && deployed && !system => {
                agent.startup_activation().await;
            }
            None => {}
        }
        systemd::ready(&agent.books.state.status_line(Activity::Starting));
        Ok(agent)
    }

    /// Once hail is ready: under `--system`, the first start after a reboot into a new system
    /// confirms it reaches Hydra; a deployment the last hail did not see through is seen through
    /// (a system's switch followed to its end).
    pub(super) async fn after_start(&mut self) -> Result<(), AgentError> {
        if let Some(mode) = &self.config.system {
            let booted = system::booted(&mode.booted_system);
            if let AfterReboot::Confirm(build) = self.books.state.after_reboot(booted.as_ref()) {
                self.confirm_after_reboot(build).await?;
            }
            self.books.settle();
        }
        if let Some((build, how)) = self.unfinished.take() {
            self.see_through(build, how).await?;
        }
        Ok(())
    }

    /// Re-applies the deployed generation (e.g. after a reboot), as the original hail did.
    async fn startup_activation(&mut self) {
        self.report(Activity::StartupActivation);
        let activation = deploy::activate(
            &self.profile,
            None,
            self.config.activation_timeout,
            &self.watchdog,
            &mut self.stop,
        );
        let result = self
            .books
            .with_requests(&self.signals, activation)
            .await
            .map_err(|e| e.to_string());
        report::startup_activation(self.books.state.profile().generation, &result);
        self.books
            .state
            .apply(Timestamp::now(), Event::StartupActivation(result));
    }
}

/// This host's delay in the rollout window, from `--rollout-key` or the machine id.
fn rollout_delay(config: &Config) -> Duration {
    if config.rollout_spread.is_zero() {
        return Duration::ZERO;
    }
    let key = config.rollout_key.clone().or_else(|| {
        let id = std::fs::read_to_string(MACHINE_ID).ok()?;
        Some(id.trim().to_owned()).filter(|id| !id.is_empty())
    });
    let key = key.unwrap_or_else(|| {
        warn!(
            hail.event = "started",
            "no {MACHINE_ID} and no --rollout-key: this host takes the slot of the empty key"
        );
        String::new()
    });
    let delay = decide::rollout_delay(&key, config.job.display(), config.rollout_spread);
    info!(
        hail.event = "started",
        "rollout slot: {} after a build is eligible (spread {})",
        crate::format::duration(delay),
        crate::format::duration(config.rollout_spread)
    );
    delay
}

/// Where systemd keeps this host's id.
const MACHINE_ID: &str = "/etc/machine-id";
