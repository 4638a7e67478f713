//! Logging: native journal entries (with `HAIL_*` fields and `MESSAGE_ID`s) when stderr goes to
//! the journal, readable lines on stderr otherwise. `RUST_LOG` sets the verbosity.

use std::io::IsTerminal;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

/// Events carry fields named `hail.*` (→ `HAIL_*` in the journal) and `message_id`
/// (→ `MESSAGE_ID`), so the journal layer adds no prefix of its own.
/// `fields` go into every journal entry (not into stderr lines, whose messages name them).
pub fn init(fields: &[(&'static str, String)]) {
    let filter = verbosity(std::env::var("RUST_LOG").ok().as_deref());
    if let Some(layer) = stderr_is_journal()
        .then(tracing_journald::layer)
        .and_then(Result::ok)
    {
        let layer = layer
            .with_field_prefix(None)
            .with_syslog_identifier("hail".into())
            .with_custom_fields(fields.iter().map(|(k, v)| (*k, v.as_str())));
        tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .init();
        return;
    }
    // The journal gets every field; a terminal or a log file gets the message, which already
    // names the build, path, generation and error.
    let message_only = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        if field.name() == "message" {
            write!(w, "{value:?}")
        } else {
            Ok(())
        }
    });
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .fmt_fields(message_only);
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .init();
}

/// systemd sets `JOURNAL_STREAM=<dev>:<inode>` of the stream it connected to stderr; it only
/// counts if stderr is still that stream (not redirected by a wrapper).
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes into the provided buffer; it is read only when the call succeeded.
    if unsafe { libc::fstat(2, st.as_mut_ptr()) } != 0 {
        return false;
    }
    let st = unsafe { st.assume_init() };
    dev.parse::<u64>() == Ok(st.st_dev) && ino.parse::<u64>() == Ok(st.st_ino)
}

/// `RUST_LOG`'s `target=level` directives (`debug`, `hail=debug,warn`); `info` when unset or
/// unparsable. (The plain directive syntax is all hail needs: no regex-based filter.)
fn verbosity(spec: Option<&str>) -> Targets {
    spec.and_then(|s| s.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
}

#[cfg(test)]
mod tests {
    use super::verbosity;
    use tracing::Level;

    #[test]
    fn rust_log_directives() {
        let default = verbosity(None);
        assert!(default.would_enable("hail::agent", &Level::INFO));
        assert!(!default.would_enable("hail::agent", &Level::DEBUG));
        let debug = verbosity(Some("debug"));
        assert!(debug.would_enable("hyper", &Level::DEBUG));
        let mixed = verbosity(Some("hail=debug,warn"));
        assert!(mixed.would_enable("hail::nix", &Level::DEBUG));
        assert!(!mixed.would_enable("reqwest", &Level::INFO));
        assert!(mixed.would_enable("reqwest", &Level::WARN));
        assert!(!verbosity(Some("[{{nonsense")).would_enable("hail", &Level::DEBUG));
    }
}
