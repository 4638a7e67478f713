//! The real hail binary against a Hydra-compatible server and a signed binary cache on
//! 127.0.0.1, with real Nix: one test binary, a module per concern, the set-up in [`fixture`].

mod activation;
mod chaos;
mod confirm;
mod deploy;
mod env;
mod faults;
mod fixture;
mod gate;
mod hooks;
mod hydra;
mod monitoring;
mod netrc;
mod notify;
mod profile;
mod promises;
mod proven;
mod state;
mod status;
mod stop;
mod system;
