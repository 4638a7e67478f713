//! Logging: native journal entries (with `HAIL_*` fields and `MESSAGE_ID`s) when stderr goes to
//! the journal, readable lines on stderr otherwise. `RUST_LOG` sets the verbosity.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// Events carry fields named `hail.*` (→ `HAIL_*` in the journal) and `message_id`
/// (→ `MESSAGE_ID`), so the journal layer adds no prefix of its own.
/// `fields` go into every journal entry (not into stderr lines, whose messages name them).
pub fn init(fields: &[(&'static str, String)]) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .fmt_fields(message_only)
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
